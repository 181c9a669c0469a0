//! The `reprompt` command: check, render and score `.prompt` files, manage models, benchmark
//! the engine and the optimizer; optimize prompts.

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
    /// Score a .prompt file on its dataset with the real model
    Score(cli::score::ScoreArgs),
    /// Label words the model ranks best for a classification .prompt on its training examples
    Labels(cli::labels::LabelsArgs),
    /// Optimize a .prompt file: RL (PPO) over readable edits, or a baseline, within a budget
    Optimize(cli::optimize::OptimizeArgs),
    /// Pre-train PPO's policy on several prompts (other tasks) as a warm start for optimize
    Pretrain(cli::pretrain::PretrainArgs),
    /// Benchmarks (engine speed, optimizer quality)
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// Manage the model cache
    #[command(subcommand)]
    Models(cli::models::ModelsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let result = match &cli.command {
        Command::Check(args) => {
            cli::check::run(args, &mut stdout).map(|failed| if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Render(args) => {
            cli::render::run(args, &mut stdout, &mut std::io::stderr()).map(|()| ExitCode::SUCCESS)
        }
        Command::Score(args) => cli::score::run(args, &mut stdout).map(|()| ExitCode::SUCCESS),
        Command::Labels(args) => cli::labels::run(args, &mut stdout).map(|()| ExitCode::SUCCESS),
        Command::Optimize(args) => cli::optimize::run(args, &mut stdout).map(|()| ExitCode::SUCCESS),
        Command::Pretrain(args) => cli::pretrain::run(args, &mut stdout).map(|()| ExitCode::SUCCESS),
        Command::Bench(command) => cli::bench::run(command, &mut stdout).map(|()| ExitCode::SUCCESS),
        Command::Models(command) => cli::models::run(command, &mut stdout).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS, // `reprompt … | head`
        Err(err) => {
            // Errors quote prompt and dataset text (an unknown label, a path): untrusted.
            eprintln!("error: {}", reprompt::report::printable(&format!("{err:#}")));
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}
