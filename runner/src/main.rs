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
/// `mi_option_allow_thp` in mimalloc.h: whether mimalloc asks for transparent huge pages.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// A worker gives freed memory back after 50 ms instead of 1 s: it streams large objects
/// through megabyte buffers, and its peak memory should be what it uses. Sooner than that
/// (it was 1 ms), memory freed by one small object is given back and faulted in again by
/// the next, which cost a fifth of a worker's CPU with many small objects.
const WORKER_PURGE_DELAY_MS: std::ffi::c_long = 50;

/// Every sluice process runs without transparent huge pages: memory given back and taken
/// again is faulted in 2 MiB at a time, each zeroed whole, which cost more than a third of
/// the end-to-end throughput. A worker gives memory back after [`WORKER_PURGE_DELAY_MS`];
/// other commands (the embedded server among them) keep mimalloc's default delay, which
/// serves many small requests faster. `MIMALLOC_PURGE_DELAY` and `MIMALLOC_ALLOW_THP` set
/// in the environment win.
fn tune_allocator() {
    let worker = std::env::args_os().nth(1).is_some_and(|a| a == "worker");
    if worker && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an option of the allocator; any value is valid for this option.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, WORKER_PURGE_DELAY_MS) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: sets an option of the allocator; 0 and 1 are its values.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        // The allocator reserved memory before main, perhaps asking for huge pages: the
        // process's flag applies to every later fault, in that memory too.
        #[cfg(target_os = "linux")]
        // SAFETY: PR_SET_THP_DISABLE takes an integer flag and no pointers.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
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

    #[test]
    fn the_option_cleared_is_whether_huge_pages_are_allowed() {
        // SAFETY: reads and sets options of the allocator.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP), 1);
            // Its neighbours: pages reclaimed across threads (32), minimal purge size (0).
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP - 1), 32);
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP + 1), 0);
        }
    }
}
