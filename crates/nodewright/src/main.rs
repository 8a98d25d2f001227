//! The `nodewright` binary.

// A simulation allocates and frees small objects (pods, nodes, scheduler
// state) at a high rate; mimalloc does that at about half the cost of the
// system allocator (see the README's Measured section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nodewright::cli::main()
}
