use std::process::ExitCode;

/// mimalloc keeps freed pages for reuse, where glibc's malloc returns the U-Net's large
/// per-layer buffers to the kernel and faults them in again on the next chunk: on 28x28 images
/// that was a third of the training time (benches/RESULTS-notes.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    elbo::alloc::keep_freed_memory();
    // A panic is a bug, never an answer to input: should one happen, say so in one line and
    // exit 1 (internal error) rather than print a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("error: internal error (a bug in elbo, please report it){at}: {msg}");
    }));
    std::panic::catch_unwind(elbo::cli::main).unwrap_or(ExitCode::FAILURE)
}
