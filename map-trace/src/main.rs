use std::process::ExitCode;

use clap::Parser as _;
use map_trace::cli::{Cli, Command, InspectArgs};
use map_trace::error::TargetError;
use map_trace::inspect::Report;
use map_trace::target::analysis::GoTarget;
use map_trace::target::process;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("map-trace: {e}");
            ExitCode::from(e.exit_code())
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
        // clap enforces one of the two.
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
