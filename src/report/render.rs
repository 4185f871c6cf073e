//! Spelling a report [`Document`] as Markdown (to paste into a post-incident review) or as one
//! standalone HTML page (no script, no external resource). Every string is escaped for its
//! format here, so a deployment name, a reason or an error from the log cannot change the
//! document's structure. Must not decide what a report says: that is [`super::build`].

use super::{Block, Document};
// The on-call page's escaping: one rule for every HTML driftd writes.
use crate::admin::ui::esc;

/// A Markdown table cell: `|` would end the cell and a line break the row.
fn md_cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// Markdown outside tables: text that would start a heading, list or HTML stays text.
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '#' | '<' | '>' | '[' | ']' | '|'
        ) {
            out.push('\\');
        }
        out.push(if c == '\n' || c == '\r' { ' ' } else { c });
    }
    out
}

/// The document as Markdown.
pub fn markdown(doc: &Document) -> String {
    let mut out = format!("# {}\n", md_text(&doc.title));
    for section in &doc.sections {
        out.push_str(&format!("\n## {}\n", md_text(&section.heading)));
        for block in &section.blocks {
            out.push('\n');
            match block {
                Block::Para(p) => {
                    out.push_str(&md_text(p));
                    out.push('\n');
                }
                Block::Code(c) => {
                    // A fence longer than any backtick run inside cannot be closed early.
                    let longest = c.split(|ch| ch != '`').map(str::len).max().unwrap_or(0);
                    let fence = "`".repeat(longest.max(2) + 1);
                    out.push_str(&format!("{fence}sh\n{c}\n{fence}\n"));
                }
                Block::Table(header, rows) => {
                    let line = |cells: &[String]| {
                        format!(
                            "| {} |\n",
                            cells
                                .iter()
                                .map(|c| md_cell(c))
                                .collect::<Vec<_>>()
                                .join(" | ")
                        )
                    };
                    out.push_str(&line(header));
                    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
                    for row in rows {
                        out.push_str(&line(row));
                    }
                }
            }
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.4}\
table{border-collapse:collapse;margin:.5rem 0;width:100%}th,td{border:1px solid #999;padding:.25rem .5rem;text-align:left;vertical-align:top}\
th{background:#eee}pre{background:#f4f4f4;padding:.5rem;overflow-x:auto}";

/// The document as one standalone HTML page.
pub fn html(doc: &Document) -> String {
    let title = esc(&doc.title);
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    for section in &doc.sections {
        out.push_str(&format!("<section>\n<h2>{}</h2>\n", esc(&section.heading)));
        for block in &section.blocks {
            match block {
                Block::Para(p) => out.push_str(&format!("<p>{}</p>\n", esc(p))),
                Block::Code(c) => out.push_str(&format!("<pre><code>{}</code></pre>\n", esc(c))),
                Block::Table(header, rows) => {
                    out.push_str("<table>\n<thead><tr>");
                    for h in header {
                        out.push_str(&format!("<th scope=\"col\">{}</th>", esc(h)));
                    }
                    out.push_str("</tr></thead>\n<tbody>\n");
                    for row in rows {
                        out.push_str("<tr>");
                        for cell in row {
                            out.push_str(&format!("<td>{}</td>", esc(cell)));
                        }
                        out.push_str("</tr>\n");
                    }
                    out.push_str("</tbody>\n</table>\n");
                }
            }
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}
