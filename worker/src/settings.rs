//! Reading the Worker's numeric settings (vars): one rule for every setting group (scheduler,
//! container lifecycle, the mayor's turn limits).

/// `key` as a positive whole number, from `lookup` (a var reader); unset, blank, malformed, zero
/// or negative: `default`.
pub fn positive(lookup: &impl Fn(&str) -> Option<String>, key: &str, default: i64) -> i64 {
    lookup(key).and_then(|v| v.trim().parse::<i64>().ok()).filter(|v| *v > 0).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_positive_numbers_override_the_default() {
        let lookup = |k: &str| match k {
            "A" => Some(" 250 ".to_string()),
            "B" => Some("-1".into()),
            "C" => Some("nonsense".into()),
            "D" => Some("0".into()),
            _ => None,
        };
        let got: Vec<i64> =
            ["A", "B", "C", "D", "E"].iter().map(|k| super::positive(&lookup, k, 7)).collect();
        assert_eq!(got, [250, 7, 7, 7, 7]);
    }
}
