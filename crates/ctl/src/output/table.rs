//! `-w table`: the ASCII tables etcdctl draws (with the Go `tablewriter`
//! package) for member lists and endpoint status and health: a bordered
//! grid, upper-case headers centred, cells right-aligned, cells longer than
//! 30 columns wrapped at spaces into the fewest, most even lines. Other
//! commands refuse the format, as etcdctl does.

/// Widest a cell grows before its words are wrapped onto more lines.
const CELL_WIDTH_MAX: usize = 30;

/// A rendered table.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let header_cells: Vec<Vec<String>> = headers
        .iter()
        .map(|h| wrap_cell(&h.to_uppercase()))
        .collect();
    let body: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| wrap_cell(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = header_cells.iter().map(|c| cell_width(c)).collect();
    for row in &body {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell_width(cell));
            }
        }
    }
    let border = {
        let mut line = String::from("+");
        for w in &widths {
            line.push_str(&"-".repeat(w + 2));
            line.push('+');
        }
        line.push('\n');
        line
    };
    let mut out = border.clone();
    out.push_str(&row_lines(&header_cells, &widths, Align::Center));
    out.push_str(&border);
    for row in &body {
        out.push_str(&row_lines(row, &widths, Align::Right));
    }
    // tablewriter closes the grid even when there are no rows.
    out.push_str(&border);
    out
}

#[derive(Clone, Copy)]
enum Align {
    Center,
    Right,
}

fn row_lines(cells: &[Vec<String>], widths: &[usize], align: Align) -> String {
    let height = cells.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut out = String::new();
    for line in 0..height {
        out.push('|');
        for (i, width) in widths.iter().enumerate() {
            let text = cells
                .get(i)
                .and_then(|c| c.get(line))
                .map_or("", String::as_str);
            let gap = width.saturating_sub(text.chars().count());
            let (left, right) = match align {
                Align::Center => (gap / 2, gap - gap / 2),
                Align::Right => (gap, 0),
            };
            out.push(' ');
            out.push_str(&" ".repeat(left));
            out.push_str(text);
            out.push_str(&" ".repeat(right));
            out.push_str(" |");
        }
        out.push('\n');
    }
    out
}

fn cell_width(lines: &[String]) -> usize {
    lines.iter().map(|l| l.chars().count()).max().unwrap_or(0)
}

/// A cell's lines: paragraphs split at newlines, each wrapped to at most
/// [`CELL_WIDTH_MAX`] columns (or its longest word).
fn wrap_cell(text: &str) -> Vec<String> {
    let paragraphs: Vec<&str> = text.split('\n').collect();
    let widest = paragraphs
        .iter()
        .map(|p| p.chars().count())
        .max()
        .unwrap_or(0);
    let limit = widest.min(CELL_WIDTH_MAX);
    let mut lines = Vec::new();
    for (i, paragraph) in paragraphs.iter().enumerate() {
        if i > 0 {
            lines.push(" ".to_string());
        }
        lines.extend(wrap_words(paragraph, limit));
    }
    lines
}

/// Breaks `text` at spaces into lines of at most `limit` columns (or the
/// longest word) that minimise the sum of squared leftover space on all but
/// the last line, the layout tablewriter chooses.
fn wrap_words(text: &str, limit: usize) -> Vec<String> {
    const OVERFLOW_PENALTY: usize = 100_000;
    let words: Vec<&str> = text.split(' ').collect();
    let limit = words
        .iter()
        .map(|w| w.chars().count())
        .max()
        .unwrap_or(0)
        .max(limit);
    let n = words.len();
    // width(i, j): words i..=j on one line, single spaces between.
    let widths: Vec<usize> = words.iter().map(|w| w.chars().count()).collect();
    let line_width = |i: usize, j: usize| widths[i..=j].iter().sum::<usize>() + (j - i);
    let mut cost = vec![usize::MAX; n + 1];
    let mut next_break = vec![n; n + 1];
    cost[n] = 0;
    for i in (0..n).rev() {
        if line_width(i, n - 1) <= limit {
            cost[i] = 0;
            next_break[i] = n;
            continue;
        }
        for j in i + 1..n {
            let width = line_width(i, j - 1);
            let slack = limit.abs_diff(width);
            let mut c = slack.saturating_mul(slack).saturating_add(cost[j]);
            if width > limit {
                c = c.saturating_add(OVERFLOW_PENALTY);
            }
            if c < cost[i] {
                cost[i] = c;
                next_break[i] = j;
            }
        }
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        let j = next_break[i].max(i + 1);
        lines.push(words[i..j].join(" "));
        i = j;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_table_matches_etcdctl() {
        let rows = vec![vec![
            "2adee382d3283e99".to_string(),
            "started".to_string(),
            "default".to_string(),
            "http://127.0.0.1:23791".to_string(),
            "http://127.0.0.1:23790".to_string(),
            "false".to_string(),
        ]];
        let expected = "\
+------------------+---------+---------+------------------------+------------------------+------------+
|        ID        | STATUS  |  NAME   |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |
+------------------+---------+---------+------------------------+------------------------+------------+
| 2adee382d3283e99 | started | default | http://127.0.0.1:23791 | http://127.0.0.1:23790 |      false |
+------------------+---------+---------+------------------------+------------------------+------------+
";
        assert_eq!(
            render(
                &[
                    "ID",
                    "Status",
                    "Name",
                    "Peer Addrs",
                    "Client Addrs",
                    "Is Learner"
                ],
                &rows
            ),
            expected
        );
    }

    #[test]
    fn long_cells_wrap_at_spaces() {
        let lines = wrap_cell("rpc error: code = Unavailable desc = connection refused");
        assert!(lines.iter().all(|l| l.chars().count() <= CELL_WIDTH_MAX));
        assert_eq!(
            lines.join(" "),
            "rpc error: code = Unavailable desc = connection refused"
        );
        assert_eq!(wrap_cell("short"), vec!["short".to_string()]);
    }
}
