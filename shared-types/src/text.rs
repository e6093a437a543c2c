//! Bounding free text (model output, process output) that both sides keep or send.

/// Cuts `text` to at most `max_bytes` bytes, on a character boundary, and marks the cut with
/// `…` (so the result may be up to 3 bytes longer than `max_bytes`). Text within the bound is
/// left as it is.
pub fn cut_with_ellipsis(text: &mut String, max_bytes: usize) {
    if text.len() <= max_bytes {
        return;
    }
    text.truncate(text.floor_char_boundary(max_bytes));
    text.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_a_character_boundary_and_says_so() {
        let mut short = "héllo".to_string();
        cut_with_ellipsis(&mut short, 6);
        assert_eq!(short, "héllo", "within the bound: unchanged");
        let mut long = "héllo".to_string();
        cut_with_ellipsis(&mut long, 2);
        assert_eq!(long, "h…", "never inside the two bytes of é");
        let mut exact = "abc".to_string();
        cut_with_ellipsis(&mut exact, 3);
        assert_eq!(exact, "abc");
    }
}
