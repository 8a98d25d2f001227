//! The `nodewright` binary.

// A simulation allocates and frees small objects (pods, nodes, scheduler
// state) at a high rate; mimalloc does that at about half the cost of the
// system allocator (see the README's Measured section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nodewright::cli::main(keep_freed_memory)
}

/// For a command that runs to completion (a simulation, a benchmark):
/// keep memory that is freed for reuse instead of handing it back to the
/// system 10 ms later. A simulation frees and allocates again at a high
/// rate, and memory handed back is zeroed by the kernel when touched again
/// (a whole transparent huge page at a time): measured on the README's
/// 107,312-pod week, 12,000 page faults and about 0.4 s of system time
/// become 1,400 and 0.2 s. `nodewright run`, which lives for weeks, keeps
/// the default, returning what it frees.
fn keep_freed_memory() {
    // `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (the
    // bindings name no constant for it); -1: never purge.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a process-wide option; mimalloc reads it when it next
    // considers purging, and any value is valid. (A C call: no way around
    // `unsafe`, which the workspace otherwise denies.)
    #[allow(unsafe_code)]
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
