//! The `sluice` binary: parse arguments, start tracing, call the library, map the outcome to an exit code.

use clap::Parser;

/// mimalloc instead of the system allocator: buffers are allocated on one thread and freed on
/// another all through the pipeline (S3 bodies, decoded batches, encoded parts), which glibc's
/// per-thread arenas hold on to.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h: how long freed memory is kept before it goes back
/// to the system.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// In a worker, freed memory goes back after 1 ms instead of 1 s: a worker streaming a large
/// object frees megabyte buffers continuously, and its peak memory should be what it uses.
/// Other commands (the embedded server among them) keep mimalloc's default, which serves
/// many small requests faster. `MIMALLOC_PURGE_DELAY` set in the environment wins.
fn tune_allocator() {
    let worker = std::env::args_os().nth(1).is_some_and(|a| a == "worker");
    if worker && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an option of the allocator; any value is valid for this option.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1) };
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = sluice::cli::Cli::parse();
    sluice::cli::init_tracing(cli.verbose);
    match sluice::cli::dispatch(cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(error) => {
            let code = sluice::cli::exit_code_of(&error);
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(code.code() as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay_whose_default_is_a_second() {
        // SAFETY: reads an option of the allocator.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000);
    }
}
