use serde::{Deserialize, Serialize};

/// An amount of the resources a node offers and a pod requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Pod slots.
    pub pods: u32,
    /// GPUs.
    pub gpus: u32,
    /// Ephemeral storage in bytes.
    pub ephemeral_bytes: u64,
}

impl Resources {
    /// One pod's request of `cpu_millis` CPU and `memory_bytes` memory.
    pub fn pod(cpu_millis: u32, memory_bytes: u64) -> Self {
        Resources { cpu_millis, memory_bytes, pods: 1, gpus: 0, ephemeral_bytes: 0 }
    }

    /// The same request with `gpus` GPUs.
    pub fn with_gpus(self, gpus: u32) -> Self {
        Resources { gpus, ..self }
    }

    /// Component-wise sum, saturating.
    pub fn saturating_add(self, other: Self) -> Self {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            pods: self.pods.saturating_add(other.pods),
            gpus: self.gpus.saturating_add(other.gpus),
            ephemeral_bytes: self.ephemeral_bytes.saturating_add(other.ephemeral_bytes),
        }
    }

    /// Component-wise maximum: the least that covers both.
    pub fn max_each(self, other: Self) -> Self {
        Resources {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
            pods: self.pods.max(other.pods),
            gpus: self.gpus.max(other.gpus),
            ephemeral_bytes: self.ephemeral_bytes.max(other.ephemeral_bytes),
        }
    }

    /// Component-wise difference, saturating at zero.
    pub fn saturating_sub(self, other: Self) -> Self {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            pods: self.pods.saturating_sub(other.pods),
            gpus: self.gpus.saturating_sub(other.gpus),
            ephemeral_bytes: self.ephemeral_bytes.saturating_sub(other.ephemeral_bytes),
        }
    }

    /// `3500m CPU, 7168 MiB memory, 1 GPU` (GPUs only when there are some).
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{}m CPU", self.cpu_millis), format!("{} MiB memory", self.memory_bytes >> 20)];
        if self.gpus > 0 {
            parts.push(format!("{} GPU{}", self.gpus, if self.gpus == 1 { "" } else { "s" }));
        }
        parts.join(", ")
    }

    /// True when every component of `self` is at least that of `need`.
    pub fn covers(&self, need: &Self) -> bool {
        self.cpu_millis >= need.cpu_millis
            && self.memory_bytes >= need.memory_bytes
            && self.pods >= need.pods
            && self.gpus >= need.gpus
            && self.ephemeral_bytes >= need.ephemeral_bytes
    }

    /// The first component of `need` that `self` does not cover, by name.
    pub fn shortfall(&self, need: &Self) -> Option<&'static str> {
        if self.cpu_millis < need.cpu_millis {
            Some("cpu")
        } else if self.memory_bytes < need.memory_bytes {
            Some("memory")
        } else if self.pods < need.pods {
            Some("pods")
        } else if self.gpus < need.gpus {
            Some("gpus")
        } else if self.ephemeral_bytes < need.ephemeral_bytes {
            Some("ephemeral-storage")
        } else {
            None
        }
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Resources::default(), Resources::saturating_add)
    }
}
