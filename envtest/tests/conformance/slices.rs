//! I. `discovery.k8s.io/v1` EndpointSlices as clients use them: discovery, the topology fields and conditions
//! through every write verb, watches with a label selector and bookmarks, paging, deletes and kubectl's
//! table. On the real tier all of it goes through the facade over kube-apiserver 1.20's v1beta1; the
//! `facade_*` cases check what only the facade has: the v1beta1 form it stores and the 422 for what 1.20
//! cannot hold.
//!
//! Every endpoint here sets `conditions`: kube-apiserver prints an unset one as `"conditions": {}` (a Go
//! struct), the in-memory server leaves it out.

use std::collections::BTreeSet;

use anyhow::ensure;
use serde_json::{Value, json};

use crate::support::{
    Case, Ctx, JSON_PATCH, MERGE, Needs, STRATEGIC, cases, check_eq, item_names, q, rv, secs,
};

const V1: &str = "discovery.k8s.io/v1";
const V1BETA1: &str = "discovery.k8s.io/v1beta1";

pub fn cases() -> Vec<Case> {
    cases![
        endpointslice_v1_discovery => Needs::EndpointSliceV1,
        endpointslice_v1_topology_and_conditions_round_trip => Needs::EndpointSliceV1,
        endpointslice_v1_every_write_verb_keeps_v1_fields => Needs::EndpointSliceV1,
        endpointslice_v1_watch_with_label_selector_and_bookmark => Needs::EndpointSliceV1,
        endpointslice_v1_list_paging_and_field_selector => Needs::EndpointSliceV1,
        endpointslice_v1_delete_and_deletecollection => Needs::EndpointSliceV1,
        endpointslice_v1_kubectl_table => Needs::EndpointSliceV1,
        endpointslice_v1_kubectl_apply => Needs::EndpointSliceV1,
        facade_stores_v1_fields_as_v1beta1_topology => Needs::Facade,
        facade_refuses_hints_with_422 => Needs::Facade,
    ]
}

fn slices(cx: &Ctx) -> String {
    cx.group(V1, "endpointslices")
}

/// A v1 slice of Service `svc` with `endpoints`.
fn slice(name: &str, svc: &str, endpoints: Value) -> Value {
    json!({
        "apiVersion": V1, "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
    })
}

/// An endpoint with every field v1 and 1.20's v1beta1 share, topology included.
fn full_endpoint(ns: &str, ip: &str, zone: &str) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": false, "serving": true, "terminating": true},
           "hostname": "h1", "nodeName": "n1", "zone": zone,
           "deprecatedTopology": {"topology.kubernetes.io/region": "r1"},
           "targetRef": {"kind": "Pod", "name": "p1", "namespace": ns}})
}

async fn endpointslice_v1_discovery(cx: Ctx) -> anyhow::Result<()> {
    let groups = cx.get("/apis").await?.ok()?;
    let group = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == "discovery.k8s.io")
        .cloned()
        .unwrap_or_default();
    check_eq!(
        group["preferredVersion"],
        json!({"groupVersion": V1, "version": "v1"})
    );
    let group_doc = cx.get("/apis/discovery.k8s.io").await?.ok()?;
    check_eq!(group_doc["preferredVersion"]["version"], json!("v1"));
    let resources = cx.get(&format!("/apis/{V1}")).await?.ok()?;
    check_eq!(resources["groupVersion"], json!(V1));
    let slices = resources["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == "endpointslices")
        .cloned()
        .unwrap_or_default();
    check_eq!(
        (slices["kind"].clone(), slices["namespaced"].clone()),
        (json!("EndpointSlice"), json!(true))
    );
    let verbs: BTreeSet<&str> = slices["verbs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for verb in [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ] {
        ensure!(
            verbs.contains(verb),
            "endpointslices lack the verb {verb}: {slices}"
        );
    }
    Ok(())
}

async fn endpointslice_v1_topology_and_conditions_round_trip(cx: Ctx) -> anyhow::Result<()> {
    let eps = json!([full_endpoint(&cx.ns, "10.0.0.1", "z1"),
        {"addresses": ["10.0.0.2"], "conditions": {"ready": true}, "nodeName": "n2"},
        {"addresses": ["10.0.0.3"], "conditions": {"ready": false},
         "deprecatedTopology": {"kubernetes.io/hostname": "n9"}, "nodeName": "n3"}]);
    let created = cx
        .post(&slices(&cx), slice("s", "svc", eps.clone()))
        .await?
        .ok()?;
    check_eq!(created["apiVersion"], json!(V1));
    check_eq!(created["endpoints"], eps);
    let read = cx.get(&format!("{}/s", slices(&cx))).await?.ok()?;
    check_eq!(read["endpoints"], eps);
    check_eq!(rv(&read), rv(&created));
    Ok(())
}

async fn endpointslice_v1_every_write_verb_keeps_v1_fields(cx: Ctx) -> anyhow::Result<()> {
    let path = format!("{}/s", slices(&cx));
    let created = cx
        .post(
            &slices(&cx),
            slice("s", "svc", json!([full_endpoint(&cx.ns, "10.0.0.1", "z1")])),
        )
        .await?
        .ok()?;
    let mut replaced = created.clone();
    replaced["endpoints"][0]["zone"] = json!("z2");
    let updated = cx.put(&path, replaced).await?.ok()?;
    check_eq!(updated["endpoints"][0]["zone"], json!("z2"), "PUT");
    let merged = cx
        .patch(
            &path,
            MERGE,
            json!({"endpoints": [full_endpoint(&cx.ns, "10.0.0.2", "z3")]}),
        )
        .await?
        .ok()?;
    check_eq!(
        merged["endpoints"],
        json!([full_endpoint(&cx.ns, "10.0.0.2", "z3")]),
        "merge patch"
    );
    let ops = json!([{"op": "replace", "path": "/endpoints/0/zone", "value": "z4"},
                     {"op": "add", "path": "/endpoints/0/conditions/ready", "value": true}]);
    let patched = cx.patch(&path, JSON_PATCH, ops).await?.ok()?;
    check_eq!(patched["endpoints"][0]["zone"], json!("z4"), "JSON patch");
    check_eq!(
        patched["endpoints"][0]["conditions"]["ready"],
        json!(true),
        "JSON patch"
    );
    check_eq!(
        patched["endpoints"][0]["nodeName"],
        json!("n1"),
        "JSON patch keeps nodeName"
    );
    let failing = json!([{"op": "test", "path": "/endpoints/0/zone", "value": "elsewhere"}]);
    let only_zone = json!({"addresses": ["10.0.0.5"], "conditions": {"ready": true}, "zone": "z5"});
    cx.patch(&path, JSON_PATCH, failing).await?.failure(422, None)?;
    let strategic = cx
        .patch(
            &path,
            STRATEGIC,
            json!({"metadata": {"labels": {"extra": "x"}}, "endpoints": [only_zone.clone()]}),
        )
        .await?
        .ok()?;
    check_eq!(
        strategic["endpoints"],
        json!([only_zone]),
        "strategic merge patch"
    );
    check_eq!(strategic["metadata"]["labels"]["extra"], json!("x"));
    check_eq!(
        strategic["metadata"]["labels"]["kubernetes.io/service-name"],
        json!("svc")
    );
    let same = cx
        .patch(&path, MERGE, json!({"endpoints": strategic["endpoints"]}))
        .await?
        .ok()?;
    check_eq!(
        rv(&same),
        rv(&strategic),
        "a patch that changes nothing writes nothing"
    );
    let mut stale = created;
    stale["endpoints"][0]["zone"] = json!("z6");
    cx.put(&path, stale).await?.failure(409, Some("Conflict"))?;
    Ok(())
}

async fn endpointslice_v1_watch_with_label_selector_and_bookmark(cx: Ctx) -> anyhow::Result<()> {
    // An event of this kind before the watch: 1.20's watch cache sends bookmarks only after one.
    cx.post(&slices(&cx), slice("a0", "a", json!([]))).await?.ok()?;
    cx.post(&slices(&cx), slice("b0", "b", json!([]))).await?.ok()?;
    let list = cx.get(&slices(&cx)).await?.ok()?;
    let query = format!(
        "labelSelector={}&allowWatchBookmarks=true&timeoutSeconds=5&resourceVersion={}",
        q("kubernetes.io/service-name=a"),
        list["metadata"]["resourceVersion"].as_str().unwrap_or_default()
    );
    let mut watch = cx.watch(&format!("{}?{query}", slices(&cx))).await?;
    check_eq!(watch.code, 200u16);
    let endpoint =
        json!({"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "zone": "z1", "nodeName": "n1"});
    cx.post(&slices(&cx), slice("b1", "b", json!([endpoint])))
        .await?
        .ok()?;
    cx.post(&slices(&cx), slice("a1", "a", json!([endpoint])))
        .await?
        .ok()?;
    let added = watch.expect_change(secs(10)).await?;
    check_eq!(added["type"], json!("ADDED"));
    check_eq!(
        crate::support::name(&added["object"]),
        "a1",
        "only service a's slices: {added}"
    );
    check_eq!(added["object"]["apiVersion"], json!(V1));
    check_eq!(added["object"]["endpoints"], json!([endpoint]));
    if let Some(memory) = cx.env.memory_server() {
        memory.send_bookmarks();
    }
    let mut bookmarks = Vec::new();
    while let Some(ev) = watch.next(secs(10)).await? {
        check_eq!(
            ev["type"],
            json!("BOOKMARK"),
            "nothing but bookmarks after a1: {ev}"
        );
        bookmarks.push(ev);
    }
    ensure!(!bookmarks.is_empty(), "no BOOKMARK before the watch's timeout");
    for ev in bookmarks {
        check_eq!(
            (ev["object"]["kind"].clone(), ev["object"]["apiVersion"].clone()),
            (json!("EndpointSlice"), json!(V1)),
            "{ev}"
        );
    }
    Ok(())
}

async fn endpointslice_v1_list_paging_and_field_selector(cx: Ctx) -> anyhow::Result<()> {
    for i in 0..5 {
        let eps = json!([{"addresses": [format!("10.0.0.{}", i + 1)], "zone": format!("z{i}")}]);
        cx.post(&slices(&cx), slice(&format!("s{i}"), "svc", eps))
            .await?
            .ok()?;
    }
    let mut names = Vec::new();
    let mut token = String::new();
    for page in 0.. {
        ensure!(page < 5, "paging did not end");
        let continued = if token.is_empty() {
            String::new()
        } else {
            format!("&continue={}", q(&token))
        };
        let list = cx
            .get(&format!("{}?limit=2{continued}", slices(&cx)))
            .await?
            .ok()?;
        check_eq!(
            (list["kind"].clone(), list["apiVersion"].clone()),
            (json!("EndpointSliceList"), json!(V1))
        );
        ensure!(item_names(&list).len() <= 2, "more than the limit: {list}");
        for item in list["items"].as_array().into_iter().flatten() {
            let zone = format!("z{}", &crate::support::name(item)[1..]);
            check_eq!(
                item["endpoints"][0]["zone"],
                json!(zone),
                "item {}",
                crate::support::name(item)
            );
        }
        names.extend(item_names(&list));
        token = list["metadata"]["continue"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if token.is_empty() {
            break;
        }
    }
    check_eq!(names, vec!["s0", "s1", "s2", "s3", "s4"]);
    let one = cx
        .get(&format!(
            "{}?fieldSelector={}",
            slices(&cx),
            q("metadata.name=s3")
        ))
        .await?
        .ok()?;
    check_eq!(item_names(&one), vec!["s3"]);
    Ok(())
}

async fn endpointslice_v1_delete_and_deletecollection(cx: Ctx) -> anyhow::Result<()> {
    for (name, svc) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        cx.post(
            &slices(&cx),
            slice(name, svc, json!([{"addresses": ["10.0.0.1"], "zone": "z"}])),
        )
        .await?
        .ok()?;
    }
    let deleted = cx.delete(&format!("{}/b1", slices(&cx)), None).await?;
    check_eq!(deleted.code, 200u16);
    let kind = deleted.body["kind"].as_str().unwrap_or_default().to_string();
    ensure!(
        kind == "Status" || deleted.body["apiVersion"] == V1,
        "delete answered {}",
        deleted.body
    );
    let again = cx.delete(&format!("{}/b1", slices(&cx)), None).await?;
    let status = again.failure(404, Some("NotFound"))?;
    check_eq!(
        status["details"],
        json!({"name": "b1", "group": "discovery.k8s.io", "kind": "endpointslices"})
    );
    let selector = q("kubernetes.io/service-name=a");
    let gone = cx
        .delete(&format!("{}?labelSelector={selector}", slices(&cx)), None)
        .await?
        .ok()?;
    check_eq!(
        (gone["kind"].clone(), gone["apiVersion"].clone()),
        (json!("EndpointSliceList"), json!(V1))
    );
    crate::support::eventually(secs(10), "the collection deleted", || async {
        let left = cx.get(&slices(&cx)).await?.ok()?;
        Ok(item_names(&left).is_empty().then_some(()))
    })
    .await
}

async fn endpointslice_v1_kubectl_table(cx: Ctx) -> anyhow::Result<()> {
    let eps = json!([{"addresses": ["10.0.0.1"], "zone": "z"}, {"addresses": ["10.0.0.2"]}]);
    cx.post(&slices(&cx), slice("s", "svc", eps)).await?.ok()?;
    let out = cx
        .env
        .kubectl_run(&["-n", &cx.ns, "get", "endpointslices.v1.discovery.k8s.io"])?;
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    check_eq!(rows.len(), 2usize, "header and one row in {out:?}");
    check_eq!(rows[0], vec!["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]);
    check_eq!(rows[1][..4], ["s", "IPv4", "80", "10.0.0.1,10.0.0.2"]);
    let json_out = cx
        .env
        .kubectl_run(&["-n", &cx.ns, "get", "endpointslices", "s", "-o", "json"])?;
    let object: Value = serde_json::from_str(&json_out)?;
    check_eq!(
        object["apiVersion"],
        json!(V1),
        "kubectl picks the preferred version"
    );
    check_eq!(object["endpoints"][0]["zone"], json!("z"));
    Ok(())
}

/// kubectl's client-side apply: a GET, then a create, then a strategic merge patch of the change.
async fn endpointslice_v1_kubectl_apply(cx: Ctx) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("slice.json");
    let path = file.to_str().unwrap_or_default().to_string();
    let endpoint =
        |zone: &str| json!({"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "zone": zone});
    std::fs::write(&file, slice("s", "svc", json!([endpoint("z1")])).to_string())?;
    let out = cx.env.kubectl_run(&["-n", &cx.ns, "apply", "-f", &path])?;
    check_eq!(out.trim(), "endpointslice.discovery.k8s.io/s created");
    std::fs::write(&file, slice("s", "svc", json!([endpoint("z2")])).to_string())?;
    let out = cx.env.kubectl_run(&["-n", &cx.ns, "apply", "-f", &path])?;
    check_eq!(out.trim(), "endpointslice.discovery.k8s.io/s configured");
    let read = cx.get(&format!("{}/s", slices(&cx))).await?.ok()?;
    check_eq!(read["endpoints"], json!([endpoint("z2")]));
    Ok(())
}

async fn facade_stores_v1_fields_as_v1beta1_topology(cx: Ctx) -> anyhow::Result<()> {
    let eps = json!([full_endpoint(&cx.ns, "10.0.0.1", "z1")]);
    cx.post(&slices(&cx), slice("s", "svc", eps)).await?.ok()?;
    let stored = cx
        .get(&format!("{}/s", cx.group(V1BETA1, "endpointslices")))
        .await?
        .ok()?;
    check_eq!(stored["apiVersion"], json!(V1BETA1));
    let ep = &stored["endpoints"][0];
    check_eq!(
        ep["topology"],
        json!({"kubernetes.io/hostname": "n1", "topology.kubernetes.io/zone": "z1", "topology.kubernetes.io/region": "r1"})
    );
    check_eq!(ep["nodeName"], json!("n1"), "EndpointSliceNodeName is on");
    check_eq!(
        ep["conditions"],
        json!({"ready": false, "serving": true, "terminating": true}),
        "EndpointSliceTerminatingCondition is on"
    );
    for v1_only in ["zone", "deprecatedTopology"] {
        ensure!(ep.get(v1_only).is_none(), "v1beta1 holds {v1_only}: {ep}");
    }
    Ok(())
}

async fn facade_refuses_hints_with_422(cx: Ctx) -> anyhow::Result<()> {
    let path = format!("{}/s", slices(&cx));
    let hinted = json!({"addresses": ["10.0.0.9"], "zone": "z1", "hints": {"forZones": [{"name": "z1"}]}});
    let reply = cx
        .post(
            &slices(&cx),
            slice("s", "svc", json!([{"addresses": ["10.0.0.1"]}, hinted])),
        )
        .await?;
    reply.failure(422, Some("Invalid"))?;
    check_eq!(reply.cause_fields(), vec!["endpoints[1].hints".to_string()]);
    check_eq!(reply.body["details"]["kind"], json!("EndpointSlice"));
    check_eq!(cx.get(&path).await?.code, 404u16, "nothing was created");
    let created = cx
        .post(
            &slices(&cx),
            slice("s", "svc", json!([{"addresses": ["10.0.0.1"]}])),
        )
        .await?
        .ok()?;
    let mut put = created.clone();
    put["endpoints"] = json!([hinted]);
    cx.put(&path, put).await?.failure(422, Some("Invalid"))?;
    cx.patch(&path, MERGE, json!({"endpoints": [hinted]}))
        .await?
        .failure(422, Some("Invalid"))?;
    cx.patch(&path, STRATEGIC, json!({"endpoints": [hinted]}))
        .await?
        .failure(422, Some("Invalid"))?;
    let ops = json!([{"op": "add", "path": "/endpoints/0/hints", "value": {"forZones": [{"name": "z1"}]}}]);
    let reply = cx.patch(&path, JSON_PATCH, ops).await?;
    reply.failure(422, Some("Invalid"))?;
    check_eq!(reply.cause_fields(), vec!["endpoints[0].hints".to_string()]);
    let now = cx.get(&path).await?.ok()?;
    check_eq!(rv(&now), rv(&created), "no refused write changed the slice");
    Ok(())
}
