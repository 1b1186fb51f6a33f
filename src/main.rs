use std::process::ExitCode;

use stap_server::app::{self, Cleanup};
use stap_server::cli;
use stap_server::error::Exit;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("STAP_SERVER_TRACE"))
        .with_writer(std::io::stderr)
        .init();
    let invocation = match cli::parse(std::env::args_os()) {
        Ok(i) => i,
        Err(e) => {
            let code = Exit::of_command_line(e.exit_code());
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stap-server: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Failed.code());
        }
    };
    let cleanup = Cleanup::default();
    let result = runtime.block_on(async {
        if app::handles_signals(&invocation) {
            return app::run(invocation, cleanup.clone()).await;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        // Biased: an action that has finished wins over a signal that came meanwhile.
        tokio::select! {
            biased;
            r = app::run(invocation, cleanup.clone()) => r,
            _ = tokio::signal::ctrl_c() => { cleanup.run().await; Err(stap_server::error::Error::Interrupted) }
            _ = term.recv() => { cleanup.run().await; Err(stap_server::error::Error::Interrupted) }
        }
    });
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("stap-server: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
