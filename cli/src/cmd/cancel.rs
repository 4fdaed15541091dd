//! `pmctl cancel`: cancel tasks, so they never run (again); a running one is stopped on its agent.
//!
//! Prints one line per id (`ID cancelled`, `ID not found` or `ID not cancelled (WHY)`) and fails (exit 1)
//! if any id was not cancelled. Ids are sent in batches the server accepts, each to the node holding it.

use pm_client::ConnectOptions;
use pm_protocol::ErrorCode;

use crate::shared::{Failure, ServerArgs, EXIT_FAILED};

/// The arguments of `pmctl cancel`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Task ids.
    #[arg(required = true)]
    ids: Vec<u64>,
}

/// `pmctl cancel`.
pub async fn run(server: &ServerArgs, args: &Args) -> Result<(), Failure> {
    let client = server.connect_cluster(ConnectOptions::producer()).await?;
    let max_batch = client.welcome().max_batch.max(1) as usize;
    let mut failed = 0;
    for chunk in args.ids.chunks(max_batch) {
        let codes = client.cancel_each(chunk.to_vec()).await;
        for (id, code) in chunk.iter().zip(codes) {
            match code {
                Ok(ErrorCode::Ok) => println!("{id} cancelled"),
                Ok(ErrorCode::NotFound) => {
                    failed += 1;
                    println!("{id} not found");
                }
                Ok(code) => {
                    failed += 1;
                    println!("{id} not cancelled ({})", code.as_str_name());
                }
                Err(e) => {
                    failed += 1;
                    println!("{id} not cancelled ({e})");
                }
            }
        }
    }
    if failed > 0 {
        return Err(Failure(EXIT_FAILED, format!("{failed} task(s) were not cancelled")));
    }
    Ok(())
}
