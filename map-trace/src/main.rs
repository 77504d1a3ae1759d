use std::process::ExitCode;

use clap::Parser as _;
use map_trace::cli::{Cli, Command, InspectArgs};
use map_trace::error::TargetError;
use map_trace::inspect::Report;
use map_trace::target::analysis::GoTarget;
use map_trace::target::process;
use map_trace::trace;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Inspect(args)) => inspect(args).map_err(|e| (e.exit_code(), e.to_string())),
        None => trace::run(trace::Options {
            pids: cli.trace.pids,
            duration: cli.trace.duration,
            format: cli.trace.format,
        })
        .map_err(|e| (e.exit_code(), e.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("map-trace: {msg}");
            ExitCode::from(code)
        }
    }
}

fn inspect(args: InspectArgs) -> Result<(), TargetError> {
    let (path, process) = match (args.path, args.pid) {
        (_, Some(pid)) => {
            let p = process::resolve(pid)?;
            (p.host_path.clone(), Some(p))
        }
        (Some(path), None) => (path, None),
        // clap requires one of the two.
        (None, None) => unreachable!("clap requires a path or --pid"),
    };
    let target = GoTarget::analyze(&path)?;
    let report = Report::new(&target, process.as_ref());
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_human());
    }
    Ok(())
}
