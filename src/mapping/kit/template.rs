//! `@template`: `{{path}}` and `{{{path}}}` placeholders.
//!
//! Like the reference, two passes run one after the other: first every
//! `{{{...}}}`, then every `{{...}}` (so text inserted by the first pass is scanned
//! by the second). The inside of a placeholder is one or more characters other
//! than `}`, trimmed, and read with the plain path rules (no `$.` handling).
//! Missing and `null` give `""`; other values are converted like JavaScript's
//! `String()` (objects `[object Object]`, arrays joined with `,`). No HTML escaping.

use super::path::get;
pub(crate) use super::replace::TooLong;
use super::value::{js_string, Data};
use crate::mapping::number::js_trim;

/// Renders a template against `data`.
/// `Err` as soon as a pass's result passes `limit` bytes more than the
/// template's own text (the mapping's text is not the event's doing).
pub(crate) fn render(template: &str, data: Data<'_>, limit: usize) -> Result<String, TooLong> {
    let limit = limit.saturating_add(template.len());
    let first = replace_placeholders(template, "{{{", "}}}", data, limit)?;
    replace_placeholders(&first, "{{", "}}", data, limit)
}

/// A piece of a template for one pass: text copied as it is, or the trimmed
/// inside of a placeholder (a path for [`get`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Piece<'t> {
    Text(&'t str),
    Placeholder(&'t str),
}

/// The pieces of one pass over `template`, in order, as [`render`] reads them:
/// `None` when the template has a `{{{...}}}` placeholder (the first pass changes
/// the text the second pass reads), else the `{{...}}` pass's pieces.
pub(crate) fn parse(template: &str) -> Option<Vec<Piece<'_>>> {
    let mut triple = false;
    scan(template, "{{{", "}}}", |piece| {
        triple |= matches!(piece, Piece::Placeholder(_))
    });
    if triple {
        return None;
    }
    let mut pieces = Vec::new();
    scan(template, "{{", "}}", |piece| pieces.push(piece));
    Some(pieces)
}

fn replace_placeholders(text: &str, open: &str, close: &str, data: Data<'_>, limit: usize) -> Result<String, TooLong> {
    let mut out = String::with_capacity(text.len());
    let mut over = false;
    scan(text, open, close, |piece| {
        if over {
            return;
        }
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(path) => {
                let value = get(data, path);
                if !value.is_nullish() {
                    js_string(&value, &mut out);
                }
            }
        }
        over = out.len() > limit;
    });
    if over {
        Err(TooLong)
    } else {
        Ok(out)
    }
}

/// Splits `text` into text and `open ... close` placeholders (one or more
/// characters other than `}` inside); text pieces are never empty.
fn scan<'t>(text: &'t str, open: &str, close: &str, mut each: impl FnMut(Piece<'t>)) {
    let mut i = 0;
    // Start of the text not yet handed out.
    let mut text_start = 0;
    // Byte offset of the first `}` at or after the last search start (or the text's
    // length when there is none); keeps the scan linear even for long runs of `{`.
    let mut next_close: Option<usize> = None;
    while i < text.len() {
        let rest = text.get(i..).unwrap_or("");
        if rest.starts_with(open) {
            let inner_start = i + open.len();
            let inner_end = match next_close {
                Some(p) if p >= inner_start => p,
                _ => {
                    let found = text
                        .get(inner_start..)
                        .and_then(|s| s.find('}'))
                        .map_or(text.len(), |p| p + inner_start);
                    next_close = Some(found);
                    found
                }
            };
            let closes = text.get(inner_end..).is_some_and(|s| s.starts_with(close));
            if inner_end > inner_start && closes {
                if text_start < i {
                    each(Piece::Text(text.get(text_start..i).unwrap_or("")));
                }
                let inner = text.get(inner_start..inner_end).unwrap_or("");
                each(Piece::Placeholder(js_trim(inner)));
                i = inner_end + close.len();
                text_start = i;
                continue;
            }
        }
        match rest.chars().next() {
            Some(c) => i += c.len_utf8(),
            None => break,
        }
    }
    if text_start < text.len() {
        each(Piece::Text(text.get(text_start..).unwrap_or("")));
    }
}
