//! Reading a request: plain text or a JSON object, its id, and everything that makes it bad.
//!
//! Parsing never fails silently: it returns either an [`Incoming`] request or a [`Rejection`]
//! that becomes a `rejected` result with a sentence a person can act on.

use fleet_common::{
    lifecycle::timing::When,
    messages::{ErrorInfo, ErrorKind, Priority, RequestBody, is_valid_id},
};
use serde_json::{Map, Value};

/// A readable request.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// The request id (given or generated).
    pub id: String,
    /// What the caller asked for.
    pub body: Body,
    /// The caller's metadata.
    pub metadata: Option<Map<String, Value>>,
    /// Not before this (`delay` or `not_before`; the later one when both are given).
    pub not_before: Vec<When>,
    /// Expired after this (`deadline`).
    pub deadline: Option<When>,
    /// `high`, `normal` or `low`.
    pub priority: Priority,
}

/// What the caller asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A natural-language request, for the classifier.
    Text(String),
    /// A task named directly.
    Explicit {
        /// The task's name.
        task: String,
        /// Its input (not validated yet).
        input: Value,
    },
}

/// A request that will never run.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The id the result is stored under (generated when the given one was unusable).
    pub id: String,
    /// The id the caller gave, when it broke the rule.
    pub given_id: Option<String>,
    /// Why.
    pub error: ErrorInfo,
    /// Whether the raw bytes go to the dead-letter queue (nothing could be understood of them).
    pub unreadable: bool,
    /// The caller's metadata, when it could be read.
    pub metadata: Option<Map<String, Value>>,
}

/// Reads a request from its raw bytes.
///
/// `header_id` is the `Nats-Msg-Id` header (it wins over the body's `id`); `generated` is the id
/// used when the caller gave none or an invalid one. It is derived from the message's place in
/// the stream, so a redelivery of the same message gets the same id.
///
/// # Errors
///
/// A [`Rejection`] for a request that is too large, not UTF-8, not a valid JSON object, has
/// neither `text` nor `task`, or carries an id that breaks the rule.
pub fn parse(
    payload: &[u8],
    header_id: Option<&str>,
    generated: &str,
    max_bytes: usize,
) -> Result<Incoming, Rejection> {
    let reject = |id: Option<&str>, kind, message: String, unreadable| {
        let (id, given_id) = resolve_id(id, generated);
        Rejection {
            id,
            given_id,
            error: ErrorInfo::new(kind, message),
            unreadable,
            metadata: None,
        }
    };
    if payload.len() > max_bytes {
        return Err(reject(
            header_id,
            ErrorKind::TooLarge,
            format!(
                "the request is {} bytes, more than the {max_bytes} allowed (FLEET_MAX_REQUEST_BYTES); send a smaller request or pass large data by reference",
                payload.len()
            ),
            true,
        ));
    }
    let Ok(text) = std::str::from_utf8(payload) else {
        return Err(reject(
            header_id,
            ErrorKind::BadRequest,
            "the request is not UTF-8 text; send plain text or a JSON object (the raw bytes are kept in the dead-letter queue)".into(),
            true,
        ));
    };
    // A UTF-8 byte-order mark (some editors and Windows tools write one) is not part of the
    // request: `\u{feff}{"task": …}` is JSON, not text.
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return Err(reject(
            header_id,
            ErrorKind::BadRequest,
            "the request is empty; send what you want done as text, or a JSON object with `text` or `task`".into(),
            false,
        ));
    }
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        let (id, given_id) = resolve_id(header_id, generated);
        return match given_id {
            Some(bad) => Err(bad_id(id, bad, None)),
            None => Ok(Incoming {
                id,
                body: Body::Text(trimmed.to_owned()),
                metadata: None,
                not_before: Vec::new(),
                deadline: None,
                priority: Priority::Normal,
            }),
        };
    }
    let value: Value = serde_json::from_str(trimmed).map_err(|e| {
        reject(
            header_id,
            ErrorKind::BadRequest,
            format!("the request looks like JSON but is not valid JSON ({e}); fix the JSON or send plain text"),
            true,
        )
    })?;
    if !value.is_object() {
        return Err(reject(
            header_id,
            ErrorKind::BadRequest,
            "a JSON request must be an object with `text` or with `task` and `input`".into(),
            true,
        ));
    }
    // `priority` is read here, so that a value that is not one gets a sentence of its own.
    let given = value.get("priority").filter(|p| !p.is_null());
    if let Some(p) = given
        && p.as_str().and_then(Priority::parse).is_none()
    {
        let shown: String = p.to_string().chars().take(40).collect();
        let id = header_id.or(value.get("id").and_then(Value::as_str));
        let mut rejection = reject(
            id,
            ErrorKind::BadRequest,
            format!("`priority` is {shown}; use \"high\", \"normal\" (the default) or \"low\""),
            false,
        );
        rejection.metadata = value.get("metadata").and_then(Value::as_object).cloned();
        return Err(rejection);
    }
    let priority = given
        .and_then(Value::as_str)
        .and_then(Priority::parse)
        .unwrap_or_default();
    let mut value = value;
    if let Some(object) = value.as_object_mut() {
        // Read already (in any case); the body's own field is not needed again.
        object.remove("priority");
    }
    let body: RequestBody = serde_json::from_value(value).map_err(|e| {
        reject(
            header_id,
            ErrorKind::BadRequest,
            format!("the request object has a field of the wrong type ({e}); `id`, `text` and `task` are strings, `metadata` is an object"),
            true,
        )
    })?;
    let (id, given_id) = resolve_id(header_id.or(body.id.as_deref()), generated);
    if let Some(bad) = given_id {
        return Err(bad_id(id, bad, body.metadata));
    }
    let metadata = body.metadata;
    let when = |field: &str, text: Option<&str>| match text {
        None => Ok(None),
        Some(t) => When::parse(field, t).map(Some),
    };
    let times = when("delay", body.delay.as_deref()).and_then(|delay| {
        let not_before = when("not_before", body.not_before.as_deref())?;
        let deadline = when("deadline", body.deadline.as_deref())?;
        Ok((delay.into_iter().chain(not_before).collect(), deadline))
    });
    let (not_before, deadline) = match times {
        Ok(times) => times,
        Err(message) => {
            return Err(Rejection {
                id,
                given_id: None,
                error: ErrorInfo::new(ErrorKind::BadRequest, message),
                unreadable: false,
                metadata,
            });
        }
    };
    match (body.task, body.text) {
        (Some(task), _) => Ok(Incoming {
            id,
            body: Body::Explicit {
                task,
                input: body.input.unwrap_or_else(|| Value::Object(Map::new())),
            },
            metadata,
            not_before,
            deadline,
            priority,
        }),
        (None, Some(text)) if !text.trim().is_empty() => Ok(Incoming {
            id,
            body: Body::Text(text.trim().to_owned()),
            metadata,
            not_before,
            deadline,
            priority,
        }),
        _ => Err(Rejection {
            id,
            given_id: None,
            error: ErrorInfo::new(
                ErrorKind::BadRequest,
                "the request object has neither `text` (what you want, in words) nor `task` (a task name from `fleet catalog`)",
            ),
            unreadable: false,
            metadata,
        }),
    }
}

/// The id to use and, when the given one breaks the rule, the given one.
fn resolve_id(given: Option<&str>, generated: &str) -> (String, Option<String>) {
    match given {
        Some(id) if is_valid_id(id) => (id.to_owned(), None),
        Some(bad) => (generated.to_owned(), Some(bad.to_owned())),
        None => (generated.to_owned(), None),
    }
}

fn bad_id(id: String, given: String, metadata: Option<Map<String, Value>>) -> Rejection {
    let shown: String = given.chars().take(80).collect();
    Rejection {
        id,
        error: ErrorInfo::new(
            ErrorKind::BadRequest,
            format!(
                "the id `{shown}` is not valid: use 1 to 64 letters, digits, `-` or `_` (this result is stored under a generated id)"
            ),
        ),
        given_id: Some(given),
        unreadable: false,
        metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: usize = 1024;

    fn ok(payload: &[u8], header: Option<&str>) -> Incoming {
        parse(payload, header, "gen1", MAX).expect("readable")
    }

    fn err(payload: &[u8], header: Option<&str>) -> Rejection {
        parse(payload, header, "gen1", MAX).expect_err("rejected")
    }

    #[test]
    fn plain_text_is_a_request() {
        let r = ok(b"Make the letter x uppercase", None);
        assert_eq!(r.id, "gen1");
        assert_eq!(r.body, Body::Text("Make the letter x uppercase".into()));
        assert_eq!(ok(b"hi", Some("abc")).id, "abc");
    }

    #[test]
    fn json_objects_carry_id_task_and_metadata() {
        let r = ok(
            br#"{"id":"r-1","task":"text.transform","input":{"text":"a","op":"upper"},"metadata":{"k":1}}"#,
            None,
        );
        assert_eq!(r.id, "r-1");
        assert_eq!(
            r.body,
            Body::Explicit {
                task: "text.transform".into(),
                input: json!({"text":"a","op":"upper"})
            }
        );
        assert_eq!(r.metadata.expect("metadata")["k"], 1);
        assert_eq!(ok(br#"{"id":"body","text":"x"}"#, Some("head")).id, "head");
    }

    #[test]
    fn bad_input_is_rejected_with_the_right_kind() {
        assert_eq!(
            err(&[0xff, 0xfe, b'a'], None).error.kind,
            ErrorKind::BadRequest
        );
        assert!(err(&[0xff], None).unreadable);
        let e = err(b"{not json", None);
        assert_eq!(e.error.kind, ErrorKind::BadRequest);
        assert!(e.unreadable);
        assert_eq!(err(b"[1,2]", None).error.kind, ErrorKind::BadRequest);
        assert_eq!(
            err(br#"{"metadata":{}}"#, None).error.kind,
            ErrorKind::BadRequest
        );
        assert_eq!(
            err(br#"{"text": 5}"#, None).error.kind,
            ErrorKind::BadRequest
        );
        assert_eq!(
            err(&vec![b'a'; MAX + 1], None).error.kind,
            ErrorKind::TooLarge
        );
        assert_eq!(err(b"   ", None).error.kind, ErrorKind::BadRequest);
    }

    #[test]
    fn a_bad_id_gets_a_generated_one_and_is_quoted() {
        let e = err(br#"{"id":"has space!","text":"x"}"#, None);
        assert_eq!(e.id, "gen1");
        assert_eq!(e.given_id.as_deref(), Some("has space!"));
        assert!(e.error.message.contains("has space!"));
        let e = err(b"hello", Some("bad id"));
        assert_eq!(e.given_id.as_deref(), Some("bad id"));
    }

    #[test]
    fn json_with_a_byte_order_mark_is_json() {
        let body = "\u{feff}{\"task\": \"text.transform\", \"input\": {\"text\": \"a\", \"op\": \"upper\"}}";
        let incoming = parse(body.as_bytes(), None, "gen", 1024).expect("readable");
        assert!(
            matches!(incoming.body, Body::Explicit { ref task, .. } if task == "text.transform"),
            "{incoming:?}"
        );
    }

    #[test]
    fn delays_and_deadlines_are_read_and_bad_ones_refused() {
        let r = ok(
            br#"{"id":"a","text":"hi","delay":"30s","not_before":"2030-01-01T09:00:00Z","deadline":"5m"}"#,
            None,
        );
        assert_eq!(r.not_before.len(), 2);
        assert_eq!(
            r.deadline,
            Some(When::After(std::time::Duration::from_secs(300)))
        );
        let e = err(br#"{"id":"a","text":"hi","delay":"soonish"}"#, None);
        assert_eq!(e.error.kind, ErrorKind::BadRequest);
        assert!(e.error.message.contains("delay"), "{e:?}");
        assert_eq!(e.id, "a");
        assert!(ok(br#"{"text":"hi"}"#, None).not_before.is_empty());
    }

    #[test]
    fn priority_is_read_and_a_wrong_one_refused() {
        assert_eq!(ok(br#"{"text":"hi"}"#, None).priority, Priority::Normal);
        assert_eq!(
            ok(br#"{"text":"hi","priority":"high"}"#, None).priority,
            Priority::High
        );
        assert_eq!(
            ok(br#"{"task":"t","input":{},"priority":"LOW"}"#, None).priority,
            Priority::Low
        );
        assert_eq!(
            ok(br#"{"text":"hi","priority":null}"#, None).priority,
            Priority::Normal
        );
        assert_eq!(ok(b"plain text", None).priority, Priority::Normal);
        for bad in [r#""urgent""#, "1", r#"["high"]"#] {
            let body =
                format!(r#"{{"id":"p1","text":"hi","priority":{bad},"metadata":{{"k":1}}}}"#);
            let e = err(body.as_bytes(), None);
            assert_eq!(e.error.kind, ErrorKind::BadRequest, "{bad}");
            assert!(e.error.message.contains("priority"), "{e:?}");
            assert!(e.error.message.contains("\"high\""), "{e:?}");
            assert_eq!(e.id, "p1");
            assert!(!e.unreadable);
            assert!(e.metadata.is_some());
        }
    }
}
