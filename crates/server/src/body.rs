//! Splitting a request body into command texts without building a JSON tree: a body is one
//! command object or an array of them, and each element's exact bytes become the journaled line
//! (each is then decoded strictly by `parse_line`, which rejects anything malformed inside).

/// Why a body is not a command or an array of commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all (unbalanced brackets, an unterminated string, ...).
    Malformed(String),
    /// JSON, but not an object or an array of objects.
    Shape(String),
}

/// The texts of the commands in `body`: the object itself, or each element of the array.
pub fn split(body: &[u8]) -> Result<Vec<&str>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::Malformed(format!("the body is not UTF-8: {e}")))?;
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    match trimmed.as_bytes().first() {
        Some(b'{') => {
            let end = value_end(trimmed, 0)?;
            if !trimmed[end..].trim_matches(|c: char| c.is_ascii_whitespace()).is_empty() {
                return Err(BodyError::Malformed("trailing characters after the command object".into()));
            }
            Ok(vec![trimmed])
        }
        Some(b'[') => {
            let bytes = trimmed.as_bytes();
            let mut items = Vec::new();
            let mut i = skip_ws(bytes, 1);
            if bytes.get(i) == Some(&b']') {
                return finish(trimmed, i + 1, items);
            }
            loop {
                if bytes.get(i) != Some(&b'{') {
                    return Err(shape_or_malformed(
                        trimmed,
                        format!("element {} is not a command object", items.len()),
                    ));
                }
                let end = value_end(trimmed, i)?;
                items.push(&trimmed[i..end]);
                i = skip_ws(bytes, end);
                match bytes.get(i) {
                    Some(b',') => i = skip_ws(bytes, i + 1),
                    Some(b']') => return finish(trimmed, i + 1, items),
                    _ => return Err(BodyError::Malformed(format!("expected ',' or ']' at byte {i}"))),
                }
            }
        }
        _ => Err(shape_or_malformed(trimmed, "expected a command object or an array of commands".into())),
    }
}

fn finish<'a>(text: &str, at: usize, items: Vec<&'a str>) -> Result<Vec<&'a str>, BodyError> {
    if text[at..].trim_matches(|c: char| c.is_ascii_whitespace()).is_empty() {
        Ok(items)
    } else {
        Err(BodyError::Malformed("trailing characters after the array".into()))
    }
}

/// Valid JSON of the wrong shape is a shape error; anything else is malformed.
fn shape_or_malformed(text: &str, why: String) -> BodyError {
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => BodyError::Shape(why),
        Err(e) => BodyError::Malformed(e.to_string()),
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The end (exclusive) of the object starting at `start`: brackets balanced outside strings.
fn value_end(text: &str, start: usize) -> Result<usize, BodyError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = start;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| BodyError::Malformed(format!("unbalanced '{}' at byte {i}", b as char)))?;
                    if depth == 0 {
                        return Ok(i + 1);
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    Err(BodyError::Malformed("the body ends inside a command (unbalanced brackets or an unterminated string)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_objects_and_arrays_exactly() {
        assert_eq!(split(br#" {"a":"}"} "#).unwrap(), [r#"{"a":"}"}"#]);
        let body = br#"[ {"a":[1,{"b":"]\"["}]} ,{"c":2}]"#;
        assert_eq!(split(body).unwrap(), [r#"{"a":[1,{"b":"]\"["}]}"#, r#"{"c":2}"#]);
        assert_eq!(split(b"[]").unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn tells_malformed_from_wrongly_shaped() {
        for bad in [&b"{not json"[..], b"[{\"a\":1}", b"{\"a\":\"x}", b"[{}{}]", b"{} x", b"", b"\xff"] {
            assert!(matches!(split(bad), Err(BodyError::Malformed(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        for shape in [&b"42"[..], b"[1]", b"\"tick\"", b"[{},2]"] {
            assert!(matches!(split(shape), Err(BodyError::Shape(_))), "{:?}", String::from_utf8_lossy(shape));
        }
    }
}
