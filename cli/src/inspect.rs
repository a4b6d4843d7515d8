//! `fleet status`, `fleet catalog`, `fleet trace`.

use fleet_common::topology::Fleet;

use crate::{
    EXIT_FAILED, EXIT_NO_NATS, EXIT_OK,
    output::{print_result, print_state},
};

/// Runs `fleet status`: the result when there is one, else the current state.
pub(crate) async fn status(fleet: &Fleet, id: &str, json: bool) -> i32 {
    let view = match fleet.view(id).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("fleet: {e}");
            return EXIT_NO_NATS;
        }
    };
    if view.is_unknown() {
        if json {
            println!(
                "{}",
                serde_json::json!({ "state": null, "status": null, "result": null })
            );
        }
        eprintln!("fleet: no request {id} is known (never sent, or older than FLEET_RESULT_TTL)");
        return EXIT_FAILED;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "state": view.state(),
                "status": view.record,
                "result": view.result,
            }))
            .unwrap_or_default()
        );
        return match &view.result {
            Some(r) => r.exit_code(),
            None => EXIT_OK,
        };
    }
    match (&view.result, &view.record) {
        (Some(r), _) => print_result(r, false),
        (None, Some(record)) => {
            print_state(record);
            EXIT_OK
        }
        (None, None) => EXIT_FAILED,
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
        if spec.requires_approval {
            println!("  requires approval: each request waits for `fleet approve ID`");
        }
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
    let trace_id = match fleet.view(id).await {
        Ok(view) => view
            .result
            .and_then(|r| r.trace_id)
            .or_else(|| view.record.and_then(|r| r.trace_id)),
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
