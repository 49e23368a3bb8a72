//! The verbs on a resource route: get, list, watch, create, update, patch, delete, deletecollection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::response::Response;
use serde_json::{Value, json};

use super::delete::{DeleteOptions, Deleted};
use super::error::StatusError;
use super::faults::Verb;
use super::http::{BODY_LIMIT, ResourceRoute, json_response, object_response};
use super::list::{ListPage, list, list_body};
use super::registry::{Behaviour, ResourceType};
use super::request::{decode_body, delete_options, list_query, watch_query, write_options};
use super::state::Written;
use super::store::{Obj, ObjRef};
use super::table::{Include, table, wants_table};
use super::{Shared, patch, watch};

/// How long a deleted namespace stays Terminating before its content and itself are removed.
const NAMESPACE_CLEANUP_DELAY: Duration = Duration::from_millis(500);

pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    route: &ResourceRoute,
    verb: Verb,
    q: HashMap<String, String>,
    req: Request,
) -> Result<Response, StatusError> {
    let rt = route.rt.clone();
    let headers = req.headers().clone();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let table = wants_table(accept).then(|| Include::parse(q.get("includeObject").map(String::as_str)));
    let body = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
        .await
        .map_err(|e| StatusError::bad_request(e.to_string()))?;
    let ns = route.ns();
    let name = route.name.as_deref().unwrap_or("");
    let status_write = route.sub.is_some();
    match verb {
        Verb::Get => {
            let obj = shared.state.lock().unwrap().get(&rt, ns, name)?;
            Ok(match table {
                Some(include) => table_response(
                    &rt,
                    std::slice::from_ref(&obj),
                    json!({"resourceVersion": obj_rv(&obj)}),
                    include,
                ),
                None => object_response(200, &rt, &obj),
            })
        }
        Verb::List => {
            let page = list(shared, &rt, route.ns.as_deref(), &list_query(&rt, &q)?).await?;
            Ok(match table {
                Some(include) => table_response(&rt, &page.items, page_meta(&page), include),
                None => json_response(200, Body::from_stream(list_body(rt, page))),
            })
        }
        Verb::Watch => {
            let mut wq = watch_query(&rt, &q)?;
            wq.table = table;
            let stream = watch::start(shared.clone(), rt.clone(), route.ns.as_deref(), wq)?;
            Ok(json_response(200, Body::from_stream(stream)))
        }
        Verb::Create => {
            let obj = shared.state.lock().unwrap().create(
                &rt,
                ns,
                decode_body(&headers, &body)?,
                &write_options(&q),
            )?;
            Ok(object_response(201, &rt, &obj))
        }
        Verb::Update => {
            let body = decode_body(&headers, &body)?;
            let written =
                shared
                    .state
                    .lock()
                    .unwrap()
                    .update(&rt, ns, name, status_write, body, &write_options(&q))?;
            Ok(written_response(shared, route, written))
        }
        Verb::Patch => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let mut state = shared.state.lock().unwrap();
            let written = patch::patch(
                &mut state,
                &rt,
                ns,
                name,
                status_write,
                content_type,
                &body,
                &write_options(&q),
            )?;
            drop(state);
            Ok(written_response(shared, route, written))
        }
        Verb::Delete => delete(shared, route, &delete_options(&q, &body)?),
        Verb::DeleteCollection => delete_collection(shared, route, &q, &body).await,
    }
}

fn obj_rv(obj: &Obj) -> String {
    obj.rv.to_string()
}

fn page_meta(page: &ListPage) -> Value {
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(token) = &page.continue_token {
        meta["continue"] = json!(token);
    }
    if let Some(n) = page.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    meta
}

fn table_response(rt: &ResourceType, objects: &[ObjRef], meta: Value, include: Include) -> Response {
    let values: Vec<Value> = objects.iter().map(|o| o.value()).collect();
    json_response(
        200,
        serde_json::to_vec(&table(rt, &values, meta, include)).expect("JSON"),
    )
}

fn written_response(shared: &Shared, route: &ResourceRoute, written: Written) -> Response {
    if !written.changed {
        shared.telemetry.count_noop(&route.resource_key());
    }
    object_response(if written.created { 201 } else { 200 }, &route.rt, &written.obj)
}

fn delete(
    shared: &Arc<Shared>,
    route: &ResourceRoute,
    opts: &DeleteOptions,
) -> Result<Response, StatusError> {
    let name = route.name.as_deref().unwrap_or("");
    let deleted = shared
        .state
        .lock()
        .unwrap()
        .delete(&route.rt, route.ns(), name, opts)?;
    if let Deleted::Terminating(_) = &deleted {
        schedule_namespace_cleanup(shared.clone(), name.to_string());
    }
    Ok(delete_response(&route.rt, &deleted))
}

/// Upstream answers an immediate deletion with a Success `Status`, except for the types that return the
/// deleted object (pods and services); pending deletions return the object.
fn delete_response(rt: &ResourceType, deleted: &Deleted) -> Response {
    let obj = match deleted {
        Deleted::Gone(obj) if !matches!(rt.behaviour, Behaviour::Pod | Behaviour::Service) => obj,
        other => return object_response(200, rt, other.object()),
    };
    let mut details = json!({"name": &*obj.name, "kind": rt.plural, "uid": obj.value()["metadata"]["uid"]});
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details});
    json_response(200, serde_json::to_vec(&status).expect("JSON"))
}

fn schedule_namespace_cleanup(shared: Arc<Shared>, ns: String) {
    tokio::spawn(async move {
        tokio::time::sleep(NAMESPACE_CLEANUP_DELAY).await;
        shared.state.lock().unwrap().finish_namespace(&ns);
    });
}

async fn delete_collection(
    shared: &Arc<Shared>,
    route: &ResourceRoute,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, StatusError> {
    let opts = delete_options(q, body)?;
    let mut lq = list_query(&route.rt, q)?;
    lq.limit = None;
    let page = list(shared, &route.rt, route.ns.as_deref(), &lq).await?;
    let mut deleted = Vec::new();
    for obj in &page.items {
        let ns = obj.namespace.to_string();
        let result = shared
            .state
            .lock()
            .unwrap()
            .delete(&route.rt, &ns, &obj.name, &opts);
        match result {
            Ok(Deleted::Terminating(o)) => {
                schedule_namespace_cleanup(shared.clone(), o.name.to_string());
                deleted.push(o);
            }
            Ok(d) => deleted.push(d.object().clone()),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let revision = shared.state.lock().unwrap().store.revision();
    let page = ListPage {
        revision,
        items: deleted,
        continue_token: None,
        remaining: None,
    };
    Ok(json_response(
        200,
        Body::from_stream(list_body(route.rt.clone(), page)),
    ))
}
