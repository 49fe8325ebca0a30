//! One hot sale across several Redis shards (`stock_shards: K`).
//!
//! The sale's stock is split over K hash tags, each a whole copy of the sale's structures (see
//! the gate's key list) holding a share of the units. A buyer has a home shard, picked from
//! their id, where all their units and their per-user count live, so the limit holds with one
//! script on one shard, as with one tag. When a buyer's home shard runs dry while another has
//! units, units move: half of the fullest shard's units go to the dry one, in two scripts, so
//! the sale never answers "sold out" while any shard has stock and never sells a unit twice.
//!
//! A move is crash-safe: `TAKE` takes the units off the donor and records the move in the
//! donor's `outbox` in one script; `GIVE` adds them to the recipient once, remembering the
//! move's id in the recipient's `inbox`; then the outbox entry is deleted. A move cut off
//! between the two halves stays in the outbox, and the reconciler gives it (a second `GIVE`
//! of the same move adds nothing).

use crate::domain::SaleId;

/// Takes up to ARGV[2] units off a shard (KEYS[1] its meta, KEYS[2] its outbox) for the move
/// ARGV[1] to shard ARGV[3] at ARGV[4]; answers the units taken (0: it has none).
pub(super) const TAKE: &str = r#"
local left = tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0')
local take = math.min(left, tonumber(ARGV[2]))
if take <= 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'remaining', -take)
redis.call('HINCRBY', KEYS[1], 'stock', -take)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. '|' .. take .. '|' .. ARGV[4])
return take
"#;

/// Adds the ARGV[2] units of move ARGV[1] to a shard (KEYS[1] its meta, KEYS[2] its inbox),
/// once: answers 1 when added, 0 when the move was added before, -1 when the shard is gone.
pub(super) const GIVE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'remaining', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'stock', ARGV[2])
return 1
"#;

/// A move as the donor's outbox keeps it: recipient shard, units, when it was taken.
pub(super) fn parse_move(entry: &str) -> Option<(usize, i64, i64)> {
    let mut parts = entry.split('|');
    let to = parts.next()?.parse().ok()?;
    let units = parts.next()?.parse().ok()?;
    let at = parts.next()?.parse().ok()?;
    Some((to, units, at))
}

/// Redis Cluster's slot count.
const SLOTS: u32 = 16_384;

/// The hash tag of each of a sale's `count` shards. One shard keeps the sale's plain tag, so a
/// sale of one shard has the keys it always had. More get tags whose slots fall in `count`
/// equal ranges of the slot space, which is how `redis-cli --cluster create` hands out slots:
/// K shards on a cluster of K masters land one per master.
pub fn tags(sale: SaleId, count: u16) -> Vec<String> {
    if count <= 1 {
        return vec![format!("s{sale}")];
    }
    let count = u32::from(count);
    (0..count)
        .map(|k| {
            let range = k * SLOTS / count..(k + 1) * SLOTS / count;
            // Some suffix lands in any range of the slot space; a few tries find it.
            let mut n = 0u32;
            loop {
                let tag = format!("s{sale}.{n}");
                if range.contains(&u32::from(slot(tag.as_bytes()))) {
                    break tag;
                }
                n += 1;
            }
        })
        .collect()
}

/// A buyer's home shard among `count`. FNV-1a, because every instance, of every version, must
/// agree on it (std's hasher promises neither).
pub fn home_shard(user: &str, count: u16) -> usize {
    if count <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in user.as_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(count)) as usize
}

/// `units` spread over `count` shards as evenly as they go, the first shards taking one more.
pub(super) fn split(units: u64, count: usize) -> Vec<u64> {
    let count = count.max(1) as u64;
    (0..count)
        .map(|k| units / count + u64::from(k < units % count))
        .collect()
}

/// Redis Cluster's hash slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole key when
/// it has none.
fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    (u32::from(crc) % SLOTS) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_ne!(slot(b"{}foo"), slot(b"foo"));
    }

    #[test]
    fn one_shard_keeps_the_plain_tag_and_more_spread_over_the_slot_space() {
        assert_eq!(tags(SaleId(7), 1), vec!["s7".to_owned()]);
        for count in [2u16, 3, 16] {
            let tags = tags(SaleId(7), count);
            assert_eq!(tags.len(), count as usize);
            for (k, tag) in tags.iter().enumerate() {
                let at = u32::from(slot(tag.as_bytes()));
                let k = k as u32;
                let count = u32::from(count);
                assert!(
                    (k * SLOTS / count..(k + 1) * SLOTS / count).contains(&at),
                    "{tag} at {at}"
                );
            }
        }
    }

    #[test]
    fn home_shards_are_stable_and_spread() {
        assert_eq!(home_shard("anyone", 1), 0);
        let homes: Vec<usize> = (0..3000).map(|i| home_shard(&format!("buyer-{i}"), 3)).collect();
        for k in 0..3 {
            let n = homes.iter().filter(|&&h| h == k).count();
            assert!((800..1200).contains(&n), "shard {k} is home to {n} of 3000");
        }
        assert_eq!(
            homes,
            (0..3000)
                .map(|i| home_shard(&format!("buyer-{i}"), 3))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn units_split_evenly_and_add_up() {
        assert_eq!(split(10, 3), vec![4, 3, 3]);
        assert_eq!(split(2, 3), vec![1, 1, 0]);
        assert_eq!(split(0, 1), vec![0]);
        assert_eq!(split(1_000_000, 16).iter().sum::<u64>(), 1_000_000);
    }

    #[test]
    fn moves_read_back_as_written() {
        assert_eq!(parse_move("2|5|1700000000000"), Some((2, 5, 1_700_000_000_000)));
        assert_eq!(parse_move("2|5"), None);
        assert_eq!(parse_move("x|5|1"), None);
    }
}
