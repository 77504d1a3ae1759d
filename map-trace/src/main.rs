use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};
use map_trace::cli::{Cli, Command, InspectArgs, TraceArgs};
use map_trace::config;
use map_trace::daemon;
use map_trace::discover::process;
use map_trace::error::{MAX_MESSAGE_CHARS, TargetError, one_line};
use map_trace::output::inspect::Document;
use map_trace::plan::GoTarget;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Inspect(args)) => inspect(args)
            .map(|()| 0)
            .map_err(|e| (e.exit_code(), e.to_string())),
        Some(Command::Run(args)) => run(&args.trace, args.flags()),
        Some(Command::Completions { shell }) => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell.shell(), &mut cmd, "map-trace", &mut std::io::stdout());
            Ok(0)
        }
        Some(Command::Manpage) => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map(|()| 0)
            .map_err(|e| (1, format!("writing the man page: {e}"))),
        None => run(&cli.trace, cli.trace.flags()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err((code, msg)) => {
            // One line, whatever the error quotes: scripts and journals read it as one.
            eprintln!("map-trace: {}", one_line(&msg, MAX_MESSAGE_CHARS));
            ExitCode::from(code)
        }
    }
}

/// Tracing, or `--check-config`: the settings are the config file merged with the flags.
/// Returns the exit status: 0, or under `run` the command's (or 66).
fn run(args: &TraceArgs, flags: config::Flags) -> Result<u8, (u8, String)> {
    let file = match &args.config {
        Some(path) => Some((path.as_path(), config::load(path).map_err(usage)?)),
        None => None,
    };
    let settings = config::merge(file, flags).map_err(usage)?;
    if !args.check_config {
        // A bad --exe file is refused before anything is loaded into the kernel, and before
        // the warnings, which would otherwise say less about it than the error.
        daemon::precheck(&settings).map_err(|e| (e.exit_code(), e.to_string()))?;
    }
    for w in settings.warnings() {
        eprintln!("map-trace: warning: {}", one_line(&w, MAX_MESSAGE_CHARS));
    }
    if args.check_config {
        print!("{}", settings.describe());
        println!("configuration ok");
        return Ok(0);
    }
    daemon::run(settings).map_err(|e| (e.exit_code(), e.to_string()))
}

fn usage(e: config::ConfigError) -> (u8, String) {
    (e.exit_code(), e.to_string())
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
    let report = Document::new(&target, process.as_ref());
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_human());
    }
    Ok(())
}
