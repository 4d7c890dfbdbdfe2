//! The Java client's default partitioner for keyed messages.
//!
//! Java's `DefaultPartitioner` (and `BuiltInPartitioner` since Kafka 3.3) sends a keyed
//! message to `toPositive(murmur2(key)) % partitions`, where `toPositive(x) = x & 0x7fffffff`.
//! librdkafka's `partitioner=murmur2_random` does the same for non-empty keys, and the
//! wrapper's producers use it by default, so a key lands on the same partition whichever
//! client wrote it. These functions let you compute that partition yourself.

/// Kafka's 32-bit murmur2 hash (seed `0x9747b28c`), as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for `key` among `partitions`.
///
/// Returns `None` when `partitions` is zero.
pub fn java_partition(key: &[u8], partitions: i32) -> Option<i32> {
    if partitions <= 0 {
        return None;
    }
    Some((murmur2(key) & 0x7fff_ffff) % partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from Kafka's own `UtilsTest.testMurmur2` (Java), so the hash is bit-exact.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(
                murmur2(key),
                *want,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn partition_is_the_positive_hash_modulo_the_partition_count() {
        // murmur2("21") = -973932308; & 0x7fffffff = 1173551340; % 10 = 0
        assert_eq!(java_partition(b"21", 10), Some(0));
        assert_eq!(
            java_partition(b"foobar", 7),
            Some((-790_332_482i32 & 0x7fff_ffff) % 7)
        );
        assert_eq!(java_partition(b"x", 0), None);
    }
}
