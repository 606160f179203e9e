//! Alertmanager's label matchers (`=`, `!=`, `=~`, `!~`), as amtool writes them in `filter=` and silences carry them.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::alert::LabelSet;

/// How a matcher compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (anchored regex)
    Regex,
    /// `!~` (anchored regex)
    NotRegex,
}

/// One matcher: a label name, an operator and a value. A missing label matches as "".
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: Op,
    /// Value (a regex for `=~` and `!~`).
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Matcher {
    /// A matcher; fails on an invalid regex, naming it.
    pub fn new(name: &str, op: Op, value: &str) -> Result<Matcher, String> {
        let regex = match op {
            Op::Regex | Op::NotRegex => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("`{value}` is not a valid regular expression: {e}"))?)
            }
            Op::Equal | Op::NotEqual => None,
        };
        Ok(Matcher { name: name.to_string(), op, value: value.to_string(), regex })
    }

    /// Parse `name="value"`, `name=~"regex"`, `name!=value`... as amtool sends in `filter=`.
    pub fn parse(s: &str) -> Result<Matcher, String> {
        let s = s.trim();
        let at = s.find(['=', '!']).ok_or_else(|| format!("`{s}` has no operator; write e.g. alertname=\"Foo\" (=, !=, =~, !~)"))?;
        let name = s[..at].trim();
        let rest = &s[at..];
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (Op::Regex, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (Op::NotRegex, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (Op::NotEqual, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (Op::Equal, v)
        } else {
            return Err(format!("`{s}` has no valid operator (=, !=, =~, !~)"));
        };
        if !crate::alert::is_valid_label_name(name) {
            return Err(format!("`{name}` is not a valid label name"));
        }
        let value = value.trim();
        let value = if value.starts_with('"') {
            serde_json::from_str::<String>(value).map_err(|_| format!("`{value}` is not a properly quoted string"))?
        } else {
            value.to_string()
        };
        Matcher::new(name, op, &value)
    }

    /// Whether `labels` satisfy this matcher.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.matches_value(labels.get(&self.name).map(String::as_str))
    }

    /// Whether the value of this matcher's label (`None` when absent, which matches as "")
    /// satisfies it.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        match (self.op, &self.regex) {
            (Op::Equal, _) => v == self.value,
            (Op::NotEqual, _) => v != self.value,
            (Op::Regex, Some(re)) => re.is_match(v),
            (Op::NotRegex, Some(re)) => !re.is_match(v),
            _ => unreachable!("regex matchers always carry their regex"),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regex => "=~",
            Op::NotRegex => "!~",
        };
        write!(f, "{}{op}{}", self.name, serde_json::to_string(&self.value).expect("strings serialize"))
    }
}

/// The API v2 form: `{"name": ..., "value": ..., "isRegex": ..., "isEqual": ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiMatcher {
    /// Label name.
    pub name: String,
    /// Value or regex.
    pub value: String,
    /// Regex comparison.
    pub is_regex: bool,
    /// Equality (true) or negation (false); absent means true (older clients).
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl ApiMatcher {
    /// The matcher it describes.
    pub fn to_matcher(&self) -> Result<Matcher, String> {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => Op::Equal,
            (false, false) => Op::NotEqual,
            (true, true) => Op::Regex,
            (true, false) => Op::NotRegex,
        };
        Matcher::new(&self.name, op, &self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_amtool_filters() {
        let l = labels(&[("alertname", "HighLatency"), ("severity", "page")]);
        for (filter, expected) in [
            (r#"alertname="HighLatency""#, true),
            ("alertname=HighLatency", true),
            (r#"severity!="page""#, false),
            (r#"alertname=~"High.*""#, true),
            (r#"alertname=~"High""#, false), // anchored
            (r#"team!~".+""#, true),         // missing label is ""
            (r#"team="""#, true),
        ] {
            assert_eq!(Matcher::parse(filter).unwrap().matches(&l), expected, "{filter}");
        }
    }

    #[test]
    fn bad_filters_say_why() {
        assert!(Matcher::parse("alertname").unwrap_err().contains("no operator"));
        assert!(Matcher::parse("1a=b").unwrap_err().contains("label name"));
        assert!(Matcher::parse("a=~\"(\"").unwrap_err().contains("regular expression"));
        assert!(Matcher::parse("a=\"unterminated").unwrap_err().contains("quoted"));
    }

    #[test]
    fn api_form_round_trips() {
        let m = ApiMatcher { name: "job".into(), value: "api|web".into(), is_regex: true, is_equal: false }.to_matcher().unwrap();
        assert_eq!(m.op, Op::NotRegex);
        assert!(m.matches(&labels(&[("job", "db")])));
        assert_eq!(m.to_string(), r#"job!~"api|web""#);
    }
}
