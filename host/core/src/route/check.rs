//! What a routing script spells out, checked when it is built rather than when an alert first takes that branch: the receiver names it returns and the alert fields it reads.
//!
//! `route()` can return a name, a map with a `receiver` key, or an array of those. A typo in
//! a branch no self-test covers (`"checkout-chatt"`) would only show when an alert takes it,
//! which then goes to the fallback. Every literal the script can return is checked up front:
//! a string in a return or in the tail of `route()` (through `if`, `switch`, blocks and
//! arrays), and the value of every `receiver:` key in a map literal outside `tests()`. Names
//! the script computes (`team + "-chat"`) are left to run time and the self-tests.
//!
//! Likewise `alert.lables.team` reads a field no alert has: it is `()`, and the script fails
//! (or worse, quietly never matches) on every alert. Every `alert.<field>` and
//! `alert["<field>"]` is checked against the fields an alert has.

use rhai::{ASTFlags, ASTNode, Engine, Expr, OptimizationLevel, Position, Stmt, StmtBlock};

/// The fields of the map a script's `route(alert)` gets (route/router.rs, `alert_map`).
pub const ALERT_FIELDS: [&str; 7] = ["labels", "annotations", "status", "starts_at", "starts_at_unix", "fingerprint", "tenant"];

/// The first `alert.<field>` or `alert["<field>"]` in `text` naming a field no alert has, with
/// its position; `alert` is the name `route()` gives its parameter (in `tests()`, where alerts
/// are written as maps with other keys, nothing is checked).
pub fn unknown_alert_field(ast: &rhai::AST) -> Option<(String, Position)> {
    let param = ast.iter_fn_def().find(|f| f.name == "route" && f.params.len() == 1)?.params[0].clone();
    let tests =
        ast.iter_fn_def().find(|f| f.name == "tests" && f.params.is_empty()).map(|f| (f.body.start_position(), f.body.end_position()));
    let mut unknown = None;
    ast.walk(&mut |path: &[ASTNode]| {
        let Some(ASTNode::Expr(expr)) = path.last() else { return true };
        let (Expr::Dot(chain, _, at) | Expr::Index(chain, _, at)) = expr else { return true };
        if tests.is_some_and(|(start, end)| start <= *at && *at <= end) {
            return true;
        }
        let Expr::Variable(variable, _, _) = &chain.lhs else { return true };
        if variable.1 != param {
            return true;
        }
        let field = match (expr, first_property(&chain.rhs)) {
            (Expr::Dot(..), Some((name, at))) => Some((name, at)),
            (Expr::Index(..), _) => match &chain.rhs {
                Expr::StringConstant(name, at) => Some((name.to_string(), *at)),
                _ => None,
            },
            _ => None,
        };
        match field {
            Some((name, at)) if !ALERT_FIELDS.contains(&name.as_str()) => {
                unknown = Some((name, at));
                false
            }
            _ => true,
        }
    });
    unknown
}

/// The first property of a chain (`lables` in `.lables.team`), with its position.
pub(super) fn first_property(expr: &Expr) -> Option<(String, Position)> {
    match expr {
        Expr::Property(property, at) => Some((property.2.to_string(), *at)),
        Expr::Dot(chain, _, _) | Expr::Index(chain, _, _) => first_property(&chain.lhs),
        _ => None,
    }
}

/// `text` compiled without optimization, so that every literal and property keeps its own
/// position (the optimizer folds constant maps into values).
pub fn unoptimized(text: &str) -> Option<rhai::AST> {
    let mut engine = Engine::new_raw();
    engine.set_optimization_level(OptimizationLevel::None);
    engine.compile(text).ok()
}

/// Every receiver name `text` spells out where `route()` returns it, with its position.
pub fn literal_receivers(ast: &rhai::AST) -> Vec<(String, Position)> {
    // Where each function's body lies: `route` is read, `tests` is not.
    let span = |name: &str, params: usize| {
        ast.iter_fn_def().find(|f| f.name == name && f.params.len() == params).map(|f| (f.body.start_position(), f.body.end_position()))
    };
    let within = |span: Option<(Position, Position)>, at: Position| span.is_some_and(|(start, end)| start <= at && at <= end);
    let (route, tests) = (span("route", 1), span("tests", 0));
    let mut found = Vec::new();
    let mut body: Vec<Stmt> = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        let Some(node) = path.last() else { return true };
        match node {
            // `receiver: "..."` in a map literal, in every function but the self-tests.
            ASTNode::Expr(Expr::Map(map, at)) if !within(tests, *at) => {
                for (key, value) in map.0.iter() {
                    if key.name == "receiver"
                        && let Expr::StringConstant(name, at) = value
                    {
                        found.push((name.to_string(), *at));
                    }
                }
            }
            // What `route()` returns (`throw` is a return with the BREAK flag).
            ASTNode::Stmt(Stmt::Return(Some(value), flags, at)) if within(route, *at) && !flags.contains(ASTFlags::BREAK) => {
                returned(value, &mut found)
            }
            // The statements of `route()`'s body, in order: the last one is its tail.
            ASTNode::Stmt(stmt) if path.len() == 1 && within(route, stmt.position()) => body.push((*stmt).clone()),
            _ => {}
        }
        true
    });
    if let Some(last) = body.last() {
        tail_of_stmt(last, &mut found);
    }
    found.sort_by_key(|(_, at)| *at);
    found.dedup();
    found
}

/// The literal names a returned value spells out: a string, or an array's strings.
pub(super) fn returned(value: &Expr, found: &mut Vec<(String, Position)>) {
    match value {
        Expr::StringConstant(name, at) => found.push((name.to_string(), *at)),
        Expr::Array(items, _) => items.iter().for_each(|item| returned(item, found)),
        Expr::Stmt(block) => tail_of_block(block, found),
        _ => {}
    }
}

pub(super) fn tail_of_block(block: &StmtBlock, found: &mut Vec<(String, Position)>) {
    if let Some(last) = block.statements().last() {
        tail_of_stmt(last, found);
    }
}

/// The value a statement in tail position gives, through `if`, `switch` and blocks.
pub(super) fn tail_of_stmt(stmt: &Stmt, found: &mut Vec<(String, Position)>) {
    match stmt {
        Stmt::Expr(value) => returned(value, found),
        Stmt::Block(block) => tail_of_block(block, found),
        Stmt::If(flow, _) => {
            tail_of_block(&flow.body, found);
            tail_of_block(&flow.branch, found);
        }
        Stmt::Switch(switch, _) => switch.1.expressions.iter().for_each(|case| returned(&case.rhs, found)),
        _ => {}
    }
}
