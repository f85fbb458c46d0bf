//! What the scenarios assert of a stored pod: mutated as the default policy says, or untouched.

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::env::{container, env_of};

/// The pod got request = limit, GOMEMLIMIT from the downward API and GOGC=off.
pub(crate) fn assert_mutated(pod: &Value, limit: &str) -> Result<()> {
    let app = container(pod, "app");
    ensure!(
        app["resources"]["requests"]["memory"] == limit,
        "request not set to the limit: {}",
        app["resources"]
    );
    let gml = env_of(app, "GOMEMLIMIT").context("no GOMEMLIMIT")?;
    ensure!(
        gml["valueFrom"]["resourceFieldRef"]["resource"] == "limits.memory"
            && gml["valueFrom"]["resourceFieldRef"]["divisor"] == "1",
        "GOMEMLIMIT is not the downward API: {gml}"
    );
    ensure!(
        env_of(app, "GOGC").is_some_and(|g| g["value"] == "off"),
        "no GOGC=off: {}",
        app["env"]
    );
    ensure!(
        pod["metadata"]["annotations"]["gomemlimit.io/status"].is_string(),
        "no status annotation"
    );
    Ok(())
}

/// The webhook left the pod alone. `request` is the request the pod was created with; a
/// pod created without one gets the limit from the API server's own defaulting.
pub(crate) fn assert_untouched(pod: &Value, request: Option<&str>) -> Result<()> {
    let app = container(pod, "app");
    if let Some(request) = request {
        ensure!(
            app["resources"]["requests"]["memory"] == request,
            "request changed: {}",
            app["resources"]
        );
    }
    ensure!(app.get("env").is_none(), "env added: {}", app["env"]);
    ensure!(
        pod["metadata"]["annotations"]
            .get("gomemlimit.io/status")
            .is_none(),
        "status annotation added"
    );
    Ok(())
}
