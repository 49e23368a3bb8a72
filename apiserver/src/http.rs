//! HTTP: routing of API paths, content negotiation, counters and faults, and responses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::Response;
use serde_json::Value;

use super::error::StatusError;
use super::faults::{FaultAction, RequestRecord, Verb};
use super::registry::ResourceType;
use super::request::flag;
use super::state::WriteOptions;
use super::{Shared, convert, discovery, handlers};

pub(crate) const BODY_LIMIT: usize = 256 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// A path into the resource API: `/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]]` or the `/apis/G/V` form.
pub(crate) struct ResourceRoute {
    pub rt: Arc<ResourceType>,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl ResourceRoute {
    /// The counters' resource key: `pods` or `pods/status`.
    pub fn resource_key(&self) -> String {
        match &self.sub {
            Some(sub) => format!("{}/{sub}", self.rt.plural),
            None => self.rt.plural.clone(),
        }
    }

    pub fn ns(&self) -> &str {
        self.ns.as_deref().unwrap_or("")
    }
}

enum Route {
    Discovery(Value),
    Text(&'static str),
    Resource(ResourceRoute),
}

fn parse_resource(
    shared: &Shared,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<ResourceRoute, StatusError> {
    let namespace_sub = group.is_empty() && rest.len() == 3 && matches!(rest[2], "status" | "finalize");
    let (ns, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() && !namespace_sub => (Some(ns.to_string()), tail),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(StatusError::no_route()),
    };
    let rt = shared
        .state
        .lock()
        .unwrap()
        .registry
        .find(group, version, plural)
        .ok_or_else(StatusError::no_route)?;
    let bad_sub = sub.as_deref().is_some_and(|s| s != "status" || !rt.status);
    if (ns.is_some() && !rt.namespaced) || bad_sub {
        return Err(StatusError::no_route());
    }
    Ok(ResourceRoute { rt, ns, name, sub })
}

fn parse_route(shared: &Shared, path: &str) -> Result<Route, StatusError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => Ok(Route::Text("ok")),
        ["api", "v1", rest @ ..] if !rest.is_empty() => {
            parse_resource(shared, "", "v1", rest).map(Route::Resource)
        }
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            parse_resource(shared, group, version, rest).map(Route::Resource)
        }
        _ => {
            let state = shared.state.lock().unwrap();
            discovery::serve(&state.registry, &segments)
                .map(Route::Discovery)
                .ok_or_else(StatusError::no_route)
        }
    }
}

fn verb_of(method: &Method, route: &ResourceRoute, q: &HashMap<String, String>) -> Option<Verb> {
    let named = route.name.is_some();
    Some(match *method {
        Method::GET if named => Verb::Get,
        Method::GET if flag(q, "watch") => Verb::Watch,
        Method::GET => Verb::List,
        Method::POST if !named => Verb::Create,
        Method::PUT if named => Verb::Update,
        Method::PATCH if named => Verb::Patch,
        Method::DELETE if named => Verb::Delete,
        Method::DELETE => Verb::DeleteCollection,
        _ => return None,
    })
}

/// JSON is acceptable unless the client only takes protobuf or only Table/discovery forms.
fn acceptable(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let plain = !parts.any(|p| p.starts_with("as="));
        matches!(
            media,
            "application/json" | "application/*" | "*/*" | "application/yaml" | ""
        ) && plain
    })
}

pub(crate) fn json_response(code: u16, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("valid response")
}

fn error_response(err: &StatusError, retry_after: Option<u32>) -> Response {
    let mut resp = json_response(err.code, serde_json::to_vec(&err.to_json()).expect("JSON"));
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

pub(crate) fn object_response(code: u16, rt: &ResourceType, obj: &super::store::Obj) -> Response {
    json_response(code, convert::render(rt, obj))
}

/// A response whose body fails at once: the client sees the connection cut.
fn dropped_response() -> Response {
    let stream = futures::stream::iter([Err::<Bytes, std::io::Error>(std::io::Error::other(
        "fault: stream dropped",
    ))]);
    json_response(200, Body::from_stream(stream))
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let (resp, verb, resource) = serve(&shared, req).await;
    shared.telemetry.record(RequestRecord {
        verb,
        resource,
        method: method.to_string(),
        path,
        query,
        status: resp.status().as_u16(),
        time: SystemTime::now(),
    });
    resp
}

async fn serve(shared: &Arc<Shared>, req: Request) -> (Response, Option<Verb>, String) {
    if req.uri().path().starts_with("/openapi/") {
        return (
            discovery::openapi(req.uri().path(), req.headers()),
            None,
            String::new(),
        );
    }
    if !acceptable(req.headers()) {
        return (
            error_response(&StatusError::not_acceptable(), None),
            None,
            String::new(),
        );
    }
    let route = match parse_route(shared, req.uri().path()) {
        Ok(Route::Resource(r)) => r,
        Ok(Route::Discovery(v)) => {
            return (
                json_response(200, serde_json::to_vec(&v).expect("JSON")),
                None,
                String::new(),
            );
        }
        Ok(Route::Text(t)) => return (Response::new(Body::from(t)), None, String::new()),
        Err(e) => return (error_response(&e, None), None, String::new()),
    };
    let query: HashMap<String, String> = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|q| q.0.into_iter().collect())
        .unwrap_or_default();
    let resource = route.resource_key();
    let Some(verb) = verb_of(req.method(), &route, &query) else {
        return (
            error_response(&StatusError::method_not_allowed(), None),
            None,
            resource,
        );
    };
    shared.telemetry.count(verb, &resource);
    let fault = shared
        .faults
        .lock()
        .unwrap()
        .take(verb, &resource, req.uri().path());
    match fault {
        Some(FaultAction::Status {
            code,
            retry_after_secs,
        }) => {
            return (
                error_response(&StatusError::from_code(code), retry_after_secs),
                Some(verb),
                resource,
            );
        }
        Some(FaultAction::DropStream) => return (dropped_response(), Some(verb), resource),
        Some(FaultAction::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let resp = match handlers::dispatch(shared, &route, verb, query, req).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e, None),
    };
    (resp, Some(verb), resource)
}

/// `MemoryApiServer::create_object`: a POST without HTTP.
pub(crate) fn create_in_process(shared: &Shared, path: &str, obj: Value) -> Result<Value, StatusError> {
    let route = match parse_route(shared, path)? {
        Route::Resource(r) if r.name.is_none() => r,
        _ => {
            return Err(StatusError::bad_request(format!(
                "{path} is not a collection path"
            )));
        }
    };
    let created =
        shared
            .state
            .lock()
            .unwrap()
            .create(&route.rt, route.ns(), obj, &WriteOptions::default())?;
    Ok(convert::to_view(&route.rt, created.value()))
}
