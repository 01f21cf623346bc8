//! PostgreSQL's text form of a one-dimensional array: `{a,"b c",NULL}`.

use crate::error::{Error, Result};

/// The elements `text` spells: unquoted ones trimmed, quoted ones with `\` escaping the next
/// character, an unquoted `NULL` (any case) as NULL. Nested arrays are refused (0A000), and
/// anything else that is not an array literal is 22P02, as PostgreSQL says.
pub fn parse(text: &str) -> Result<Vec<Option<String>>> {
    let malformed = || Error::data("22P02", format!("malformed array literal: \"{text}\""));
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(malformed)?;
    if inner.trim().is_empty() {
        return Ok(vec![]);
    }
    let mut items = vec![];
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let item = match chars.peek() {
            Some('"') => {
                chars.next();
                let mut item = String::new();
                loop {
                    match chars.next().ok_or_else(malformed)? {
                        '"' => break,
                        '\\' => item.push(chars.next().ok_or_else(malformed)?),
                        c => item.push(c),
                    }
                }
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                Some(item)
            }
            Some('{') => {
                return Err(Error::Unsupported(format!(
                    "multidimensional arrays are not supported: \"{text}\""
                )));
            }
            _ => {
                let mut item = String::new();
                while let Some(c) = chars.next_if(|c| *c != ',') {
                    match c {
                        '\\' => item.push(chars.next().ok_or_else(malformed)?),
                        '"' | '{' | '}' => return Err(malformed()),
                        c => item.push(c),
                    }
                }
                let item = item.trim_end();
                if item.is_empty() {
                    return Err(malformed());
                }
                (!item.eq_ignore_ascii_case("null")).then(|| item.to_string())
            }
        };
        items.push(item);
        match chars.next() {
            None => return Ok(items),
            Some(',') => {}
            Some(_) => return Err(malformed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_array_literals() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(parse("{a,b}").unwrap(), vec![s("a"), s("b")]);
        assert_eq!(
            parse(r#"{ a , "b, c" ,NULL,"NULL",x\,y}"#).unwrap(),
            vec![s("a"), s("b, c"), None, s("NULL"), s("x,y")]
        );
        assert_eq!(parse("{}").unwrap(), vec![]);
        assert_eq!(parse("{a,}").unwrap_err().sqlstate(), "22P02");
        assert_eq!(parse("a,b").unwrap_err().sqlstate(), "22P02");
        assert_eq!(parse("{{a},{b}}").unwrap_err().sqlstate(), "0A000");
    }
}
