//! `fleet status`, `fleet catalog`, `fleet trace`.

use fleet_common::topology::Fleet;

use crate::{
    EXIT_FAILED, EXIT_NO_NATS, EXIT_OK,
    output::{print_result, print_state},
};

/// Runs `fleet status`.
pub(crate) async fn status(fleet: &Fleet, id: &str, json: bool) -> i32 {
    let (status, result) = match (fleet.status_of(id).await, fleet.result(id).await) {
        (Ok(s), Ok(r)) => (s, r),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    if status.is_none() && result.is_none() {
        if json {
            println!("{}", serde_json::json!({ "status": null, "result": null }));
        }
        eprintln!("fleet: no request {id} is known (never sent, or older than FLEET_RESULT_TTL)");
        return EXIT_FAILED;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "status": status, "result": result })
            )
            .unwrap_or_default()
        );
        return match &result {
            Some(r) => r.exit_code(),
            None => EXIT_OK,
        };
    }
    if let Some(record) = &status {
        print_state(record);
    }
    match &result {
        Some(r) => print_result(r, false),
        None => EXIT_OK,
    }
}

/// Runs `fleet catalog`.
pub(crate) async fn catalog(fleet: &Fleet, json: bool) -> i32 {
    let specs = match fleet.read_catalog().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&specs).unwrap_or_default()
        );
        return EXIT_OK;
    }
    if specs.is_empty() {
        println!("no tasks yet: start a worker");
    }
    for spec in specs {
        println!(
            "{}{}",
            spec.name,
            if spec.explicit_only {
                "  (explicit only)"
            } else {
                ""
            }
        );
        println!("  {}", spec.description);
        println!(
            "  input:  {}",
            serde_json::to_string(&spec.input_schema).unwrap_or_default()
        );
        if !spec.output.is_empty() {
            println!("  output: {}", spec.output);
        }
        for example in &spec.examples {
            println!("  e.g.    {example}");
        }
    }
    EXIT_OK
}

/// Runs `fleet trace`.
pub(crate) async fn trace(fleet: &Fleet, id: &str, jaeger: &str, json: bool) -> i32 {
    let trace_id = match fleet.status_of(id).await {
        Ok(Some(s)) => s.trace_id,
        Ok(None) => match fleet.result(id).await {
            Ok(r) => r.and_then(|r| r.trace_id),
            Err(e) => {
                eprintln!("fleet: {e}");
                return EXIT_NO_NATS;
            }
        },
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    let Some(trace_id) = trace_id else {
        eprintln!("fleet: no trace is known for request {id}");
        return EXIT_FAILED;
    };
    let url = format!("{}/trace/{trace_id}", jaeger.trim_end_matches('/'));
    if json {
        println!(
            "{}",
            serde_json::json!({ "request_id": id, "trace_id": trace_id, "url": url })
        );
    } else {
        println!("{url}");
    }
    EXIT_OK
}
