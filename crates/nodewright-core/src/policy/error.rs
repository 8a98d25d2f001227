use std::time::Duration;

/// Why a component could not be loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a WebAssembly component.
    #[error("{plugin}: not a WebAssembly component: {reason}")]
    NotAComponent {
        /// Plugin name or file.
        plugin: String,
        /// What the bytes are instead.
        reason: String,
    },
    /// The component failed to compile.
    #[error("{plugin}: does not compile: {reason}")]
    Compile {
        /// Plugin name or file.
        plugin: String,
        /// The compiler's message.
        reason: String,
    },
    /// The component imports an interface the host does not provide.
    #[error("{plugin}: imports `{import}`, which the host does not provide (plugins may import nodewright:policy/host and WASI 0.2 cli, io, clocks, random, filesystem, sockets)")]
    UnsupportedImport {
        /// Plugin name or file.
        plugin: String,
        /// The interface name.
        import: String,
    },
    /// The component targets a contract version the host does not implement.
    #[error("{plugin}: exports `{export}`: contract version {version} is not supported (this host supports {supported})")]
    UnsupportedVersion {
        /// Plugin name or file.
        plugin: String,
        /// The export naming the version.
        export: String,
        /// The version found.
        version: String,
        /// Versions the host supports.
        supported: String,
    },
    /// The component exports neither policy interface.
    #[error("{plugin}: wrong world: exports neither nodewright:policy/instance-selection nor nodewright:policy/consolidation (found: {found})")]
    WrongWorld {
        /// Plugin name or file.
        plugin: String,
        /// What it exports instead.
        found: String,
    },
    /// The component's exports or imports do not type-check against the contract.
    #[error("{plugin}: does not match the contract: {reason}")]
    Link {
        /// Plugin name or file.
        plugin: String,
        /// wasmtime's message.
        reason: String,
    },
    /// The component loaded but failed the conformance suite.
    #[error("{plugin}: conformance check `{check}` failed: {failure}")]
    Conformance {
        /// Plugin name or file.
        plugin: String,
        /// The check that failed.
        check: String,
        /// Why.
        failure: CallFailure,
    },
    /// The plugin does not make the decision the slot needs.
    #[error("{plugin}: is a {world} plugin, slot `{slot}` needs {needed}")]
    WrongRole {
        /// Plugin name.
        plugin: String,
        /// Its world.
        world: String,
        /// The slot.
        slot: String,
        /// The export the slot needs.
        needed: String,
    },
}

/// Why one call into a plugin failed. The host answers such a call with its
/// built-in policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallFailure {
    /// The call ran past its deadline (guest and host time together).
    #[error("timed out after {} ms (deadline {} ms)", .took.as_millis(), .limit.as_millis())]
    Timeout {
        /// The deadline.
        limit: Duration,
        /// How long the call actually ran before it was stopped.
        took: Duration,
    },
    /// The plugin tried to grow its memory past the limit, which covers
    /// every memory and table of the instance together.
    #[error("exceeded its memory limit of {} MiB (its memories and tables would hold {} MiB)", .limit_bytes >> 20, .requested_bytes.div_ceil(1 << 20))]
    MemoryLimit {
        /// The limit in bytes.
        limit_bytes: u64,
        /// What the instance would have held in all, had the growth been allowed.
        requested_bytes: u64,
    },
    /// The plugin overflowed its stack.
    #[error("trapped: stack overflow")]
    StackOverflow,
    /// The plugin trapped (panic, unreachable, out-of-bounds access …).
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin could not be instantiated.
    #[error("cannot be instantiated: {0}")]
    Instantiate(String),
    /// The plugin rejected the catalog.
    #[error("rejected catalog version {version}: {message}")]
    CatalogRejected {
        /// Catalog version.
        version: u64,
        /// The plugin's message.
        message: String,
    },
    /// The plugin returned an error.
    #[error("returned an error: {0}")]
    PluginError(String),
    /// The plugin returned an answer that breaks the contract.
    #[error("invalid output: {0}")]
    InvalidOutput(String),
}

impl CallFailure {
    /// True when the instance that failed this way cannot be trusted for
    /// another call (it trapped, or was stopped part-way).
    pub fn spoils_instance(&self) -> bool {
        matches!(
            self,
            CallFailure::Timeout { .. } | CallFailure::MemoryLimit { .. } | CallFailure::StackOverflow | CallFailure::Trap(_)
        )
    }

    /// The same failure, said to have happened while the plugin received the catalog.
    pub(crate) fn during_catalog_hand_over(self) -> Self {
        match self {
            CallFailure::Trap(message) => CallFailure::Trap(format!("{message} (while receiving the catalog)")),
            CallFailure::Instantiate(message) => CallFailure::Instantiate(format!("{message} (while receiving the catalog)")),
            other => other,
        }
    }

    /// A short stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            CallFailure::Timeout { .. } => "timeout",
            CallFailure::MemoryLimit { .. } => "memory",
            CallFailure::StackOverflow => "stack-overflow",
            CallFailure::Trap(_) => "trap",
            CallFailure::Instantiate(_) => "instantiate",
            CallFailure::CatalogRejected { .. } => "catalog-rejected",
            CallFailure::PluginError(_) => "plugin-error",
            CallFailure::InvalidOutput(_) => "invalid-output",
        }
    }
}

/// Serialised as its message, the way users read it.
impl serde::Serialize for CallFailure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
