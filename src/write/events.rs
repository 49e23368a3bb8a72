//! Events (events.k8s.io/v1). The same Event published again within [`SERIES_TTL`] is one Event whose series
//! counts the repetitions, as client-go and kube-runtime's `Recorder` do; unlike them, roster counts an Event
//! as the same only when its note is the same too. Its notes carry the cause (why topology hints are off, which
//! error a write met), and folding a new cause into the series of an old one would show only the old one.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

/// How long an Event stays the one its repetitions are counted in.
pub const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What an Event says.
pub struct Notice<'a> {
    pub type_: EventType,
    pub reason: &'a str,
    pub action: &'a str,
    pub note: String,
}

/// What makes two Events the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EventKey {
    type_: EventType,
    reason: String,
    action: String,
    note: String,
    regarding: [Option<String>; 5],
}

impl EventKey {
    fn of(notice: Notice<'_>, regarding: &ObjectReference) -> EventKey {
        let r = regarding;
        EventKey {
            type_: notice.type_,
            reason: notice.reason.to_owned(),
            action: notice.action.to_owned(),
            note: notice.note,
            regarding: [&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid].map(Clone::clone),
        }
    }
}

/// Publishes Events as `controller` (`instance`: this replica).
pub struct EventWriter {
    client: Client,
    controller: String,
    instance: String,
    sent: Mutex<HashMap<EventKey, Event>>,
}

impl EventWriter {
    pub fn new(client: Client, controller: &str, instance: String) -> EventWriter {
        EventWriter {
            client,
            controller: controller.to_owned(),
            instance,
            sent: Mutex::default(),
        }
    }

    /// Creates the Event, or counts one more of the same in the Event already made; says which it did
    /// (`create` or `patch`), for the write metrics.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        notice: Notice<'_>,
    ) -> (&'static str, kube::Result<()>) {
        let now = Timestamp::now();
        let key = EventKey::of(notice, regarding);
        let earlier = self.earlier(&key, now);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let (verb, sent) = self.send(&api, earlier, regarding, &key, now).await;
        let result = sent.map(|event| {
            self.sent.lock().expect("events lock").insert(key, event);
        });
        (verb, result)
    }

    /// Counts one more in `earlier`, or creates the Event when there is none (or it is gone from the server).
    async fn send(
        &self,
        api: &Api<Event>,
        earlier: Option<Event>,
        regarding: &ObjectReference,
        key: &EventKey,
        now: Timestamp,
    ) -> (&'static str, kube::Result<Event>) {
        if let Some(event) = earlier {
            match counted(api, event, now).await {
                Ok(Some(event)) => return ("patch", Ok(event)),
                Ok(None) => {}
                Err(err) => return ("patch", Err(err)),
            }
        }
        let event = self.new_event(regarding, key, now);
        ("create", api.create(&PostParams::default(), &event).await)
    }

    /// The Event made for `key` within the series TTL; older ones are forgotten.
    fn earlier(&self, key: &EventKey, now: Timestamp) -> Option<Event> {
        let mut sent = self.sent.lock().expect("events lock");
        sent.retain(|_, event| last_seen(event).is_some_and(|at| at + SERIES_TTL > now));
        sent.get(key).cloned()
    }

    fn new_event(&self, regarding: &ObjectReference, key: &EventKey, now: Timestamp) -> Event {
        let about = regarding.name.as_deref().unwrap_or(&self.controller);
        Event {
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!("{about}.{:x}", now.as_nanosecond())),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(key.type_.as_str().to_owned()),
            reason: Some(key.reason.clone()),
            action: Some(key.action.clone()),
            note: Some(key.note.clone()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }
}

/// `event` with one more repetition counted in its series; `None` when the Event is gone from the server
/// (Events expire), so that a new one is made.
async fn counted(api: &Api<Event>, mut event: Event, now: Timestamp) -> kube::Result<Option<Event>> {
    let count = event.series.as_ref().map_or(2, |s| s.count + 1);
    event.series = Some(EventSeries {
        count,
        last_observed_time: MicroTime(now),
    });
    let series = serde_json::json!({ "series": event.series });
    let (name, params) = (event.name_any(), PatchParams::default());
    match api.patch(&name, &params, &Patch::Merge(series)).await {
        Ok(_) => Ok(Some(event)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(err) => Err(err),
    }
}

fn last_seen(event: &Event) -> Option<Timestamp> {
    let series = event.series.as_ref().map(|s| s.last_observed_time.0);
    series.or(event.event_time.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            ..ObjectReference::default()
        }
    }

    fn notice(type_: EventType, note: &str) -> Notice<'static> {
        let (reason, action, note) = ("R", "A", note.to_owned());
        Notice {
            type_,
            reason,
            action,
            note,
        }
    }

    #[test]
    fn an_event_is_the_same_only_with_the_same_note() {
        let key = |note: &str, name: &str| EventKey::of(notice(EventType::Warning, note), &pod(name));
        assert_eq!(key("n", "a"), key("n", "a"));
        assert_ne!(key("n", "a"), key("m", "a"), "another note is another Event");
        assert_ne!(key("n", "a"), key("n", "b"));
        let normal = EventKey::of(notice(EventType::Normal, "n"), &pod("a"));
        assert_ne!(key("n", "a"), normal);
    }
}
