//! Plain-text tables for people: columns padded to their widest cell, long cells cut.

const MAX_CELL: usize = 60;

pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cut = |s: &str| -> String {
        let one_line = s.replace(['\n', '\r', '\t'], " ");
        if one_line.chars().count() > MAX_CELL {
            format!("{}…", one_line.chars().take(MAX_CELL - 1).collect::<String>())
        } else {
            one_line
        }
    };
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|c| cut(c)).collect()).collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_uppercase()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_long_cells_are_cut() {
        let t = render(
            &["id", "title"],
            &[vec!["b1".into(), "short".into()], vec!["b22".into(), "x".repeat(100)]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ID   TITLE");
        assert_eq!(lines[1], "b1   short");
        assert!(
            lines[2].starts_with("b22  xxx")
                && lines[2].ends_with('…')
                && lines[2].chars().count() == 5 + MAX_CELL
        );
    }
}
