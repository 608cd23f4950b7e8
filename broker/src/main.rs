//! The `tern` binary: one MQTT broker node.

use std::process::ExitCode;

use std::io::{BufRead, IsTerminal};

use broker::auth::password::{edit_file, PasswdAction};
use broker::config::{Cli, Command, Config, LogFormat, PasswdArgs};
use clap::Parser;

fn init_logging(config: &Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .map_err(|e| format!("log level `{}`: {e}", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Reads the new password: twice without echo from a terminal, else one line
/// of standard input.
fn read_password() -> Result<Vec<u8>, String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Reenter password: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("passwords do not match".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password.into_bytes())
}

/// `tern passwd [-c] [-D] FILE USER`.
fn passwd(args: &PasswdArgs) -> ExitCode {
    let action = if args.delete {
        Ok(PasswdAction::Delete)
    } else {
        read_password().map(PasswdAction::Set)
    };
    match action.and_then(|a| edit_file(&args.file, &args.user, a, args.create)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern passwd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Passwd(args)) = &cli.command {
        return passwd(args);
    }
    let config = match cli.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&config) {
        eprintln!("tern: {e}");
        return ExitCode::from(2);
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.display(), "starting tern");
    let result =
        actix_rt::System::new().block_on(broker::server::run(config, shutdown_signal(), |_| {}));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}
