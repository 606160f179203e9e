//! `pgo-train DAEMON [BURST]`: the training workload of the profile-guided release build (`belfry_tests::pgo`), run against the daemon binary at DAEMON.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(daemon) = args.next() else {
        eprintln!("usage: pgo-train DAEMON [BURST]: DAEMON is the instrumented belfry binary; BURST unique alerts (20000)");
        return ExitCode::from(2);
    };
    let burst = match args.next().map(|b| b.parse::<usize>()) {
        None => 20_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("pgo-train: BURST must be a positive number of alerts");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let training = runtime.block_on(belfry_tests::pgo::train(&daemon, burst));
    println!(
        "pgo-train: {} webhook requests ({} resolved, {} silenced); daemon stopped {}",
        training.delivered,
        training.resolved,
        training.silenced,
        if training.clean_exit { "cleanly" } else { "with a failure" }
    );
    if training.clean_exit && training.silenced == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
