//! The Redis key layout (the guide, docs/job-partition.md, has the full table).

use crate::error::{Error, Result};

/// The set of every partition's name (the only key outside a partition's hash tag).
pub(crate) const PARTITIONS: &str = "wharf:partitions";

/// `{wharf:<partition>}:`: the prefix (and hash tag) of every key of a partition.
pub(crate) fn prefix(partition: &str) -> String {
    format!("{{wharf:{partition}}}:")
}

/// A key of the partition given to scripts as `KEYS[1]`, so Redis Cluster routes them.
pub(crate) fn route(partition: &str) -> String {
    format!("{{wharf:{partition}}}:queues")
}

pub(crate) fn queue(partition: &str, queue: &str, part: &str) -> String {
    format!("{{wharf:{partition}}}:q:{queue}:{part}")
}

pub(crate) fn job(partition: &str, id: &str) -> String {
    format!("{{wharf:{partition}}}:job:{id}")
}

/// Partition and queue names: 1 to 64 of `[A-Za-z0-9_.-]`, so they cannot break the
/// key layout (no `{`, `}` or `:`).
pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{kind} name `{name}` is not valid: use 1 to 64 characters of A-Z a-z 0-9 _ . -"
        )))
    }
}

/// Queue and execution keys: any text up to 512 bytes.
pub(crate) fn check_key(kind: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 512 {
        return Err(Error::Config(format!(
            "{kind} must be 1 to 512 bytes long (got {} bytes); return None for no key",
            key.len()
        )));
    }
    Ok(())
}
