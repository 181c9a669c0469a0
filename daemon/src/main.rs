//! The `reprompt` command: check and render `.prompt` files (optimization commands arrive with
//! the engine, evaluation and optimizer).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reprompt::cli;

#[derive(Parser)]
#[command(name = "reprompt", version, about = "Optimize LLM prompts (.prompt files) with reinforcement learning")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report problems in .prompt files: YAML, template, variables, partials, datasets
    Check(cli::check::CheckArgs),
    /// Render a .prompt file to messages (Dotprompt JSON)
    Render(cli::render::RenderArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let result = match &cli.command {
        Command::Check(args) => cli::check::run(args, &mut stdout).map(|failed| if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }),
        Command::Render(args) => cli::render::run(args, &mut stdout, &mut std::io::stderr()).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
