//! Reading what decides a Service's endpoints: get and list only (no watch, no write), each list in pages.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::backendset::BackendSet;
use crate::cache::{NodeProjection, PodProjection};
use crate::desired::LABEL_SERVICE_NAME;

/// Items per list request.
const PAGE: u32 = 500;

/// The Service and everything its endpoints come from or are compared with.
#[derive(Clone, Debug)]
pub struct Objects {
    pub service: Service,
    /// Every pod of the Service's namespace (near-misses are pods the selector does not match).
    pub pods: Vec<PodProjection>,
    /// Every Node; `Err` says why they could not be listed (the Node checks are then skipped).
    pub nodes: Result<Vec<NodeProjection>, String>,
    /// The Endpoints of the Service's name.
    pub endpoints: Option<Endpoints>,
    /// The EndpointSlices labelled with the Service's name, whoever manages them.
    pub slices: Vec<EndpointSlice>,
    /// The BackendSets of the namespace (none when the CRD is not installed); `Err` says why they could not
    /// be listed.
    pub backendsets: Result<Vec<BackendSet>, String>,
}

impl Default for Objects {
    /// No objects, every list readable.
    fn default() -> Self {
        Objects {
            service: Service::default(),
            pods: Vec::new(),
            nodes: Ok(Vec::new()),
            endpoints: None,
            slices: Vec::new(),
            backendsets: Ok(Vec::new()),
        }
    }
}

/// Reads the Service `namespace/name` and what explains it.
pub async fn read(client: &Client, namespace: &str, name: &str) -> anyhow::Result<Objects> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service = services
        .get_opt(name)
        .await
        .with_context(|| format!("reading Service {namespace}/{name}"))?
        .with_context(|| format!("Service {name} not found in namespace {namespace}"))?;
    let in_namespace = |what: &str| format!("listing {what} in namespace {namespace}");
    let slices_of = ListParams::default().labels(&format!("{LABEL_SERVICE_NAME}={name}"));
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
    let (pods, nodes, endpoints, slices, backendsets) = tokio::join!(
        list_all(
            Api::<PodProjection>::namespaced(client.clone(), namespace),
            ListParams::default()
        ),
        list_all(Api::<NodeProjection>::all(client.clone()), ListParams::default()),
        endpoints.get_opt(name),
        list_all(
            Api::<EndpointSlice>::namespaced(client.clone(), namespace),
            slices_of
        ),
        list_all(
            Api::<BackendSet>::namespaced(client.clone(), namespace),
            ListParams::default()
        ),
    );
    Ok(Objects {
        service,
        pods: pods.with_context(|| in_namespace("pods"))?,
        nodes: nodes.map_err(|err| format!("the Nodes could not be listed: {err}")),
        endpoints: endpoints.with_context(|| format!("reading Endpoints {namespace}/{name}"))?,
        slices: slices.with_context(|| in_namespace("EndpointSlices"))?,
        backendsets: match backendsets {
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
            other => other.map_err(|err| format!("the BackendSets could not be listed: {err}")),
        },
    })
}

/// Every object of a list, page by page.
async fn list_all<K>(api: Api<K>, params: ListParams) -> kube::Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.limit(PAGE);
    let mut items = Vec::new();
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}
