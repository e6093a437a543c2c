//! Exponential backoff, the one rule both sides retry by: the wait before try `n + 1` (`n` from
//! 0) is `first` doubled `n` times, never more than `cap`. Each caller names its own policy
//! (first wait, cap, how many tries) where it retries.

/// The wait in milliseconds before try `n + 1`: `first_ms * 2^n`, at most `cap_ms`.
pub fn delay_ms(first_ms: u64, n: u32, cap_ms: u64) -> u64 {
    first_ms.saturating_mul(1u64 << n.min(32)).min(cap_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_never_overflows() {
        let waits: Vec<u64> = (0..6).map(|n| delay_ms(500, n, 8_000)).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 8_000, 8_000]);
        assert_eq!(delay_ms(1_000, u32::MAX, 30_000), 30_000);
        assert_eq!(delay_ms(u64::MAX, 3, u64::MAX), u64::MAX);
    }
}
