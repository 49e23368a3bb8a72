use super::*;

fn meta(name: &str, uid: &str, rv: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some("ns".into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        resource_version: Some(rv.into()),
        ..ObjectMeta::default()
    }
}

fn version(uid: &str, rv: &str) -> Version {
    Version {
        uid: uid.into(),
        resource_version: rv.into(),
    }
}

fn id(kind: Kind, name: &str) -> ObjectId {
    ObjectId::of(kind, &meta(name, "", ""))
}

fn object(uid: &str, rv: &str) -> Seen {
    Seen::Object(version(uid, rv))
}

/// The object roster wrote: here its resourceVersion stands for it.
fn answer(rv: &str) -> Answer {
    Arc::new(rv.to_owned())
}

fn update(name: &str, uid: &str, rv: &str) -> Intent {
    Intent::Update {
        name: name.into(),
        replaced: version(uid, rv),
    }
}

fn delete(name: &str, uid: &str, rv: &str) -> Intent {
    Intent::Delete {
        name: name.into(),
        replaced: version(uid, rv),
    }
}

type Record = Written<&'static str>;

/// Writes `intent` for Endpoints `web`, answered with `rv` (`None`: a delete).
fn write(written: &mut Record, intent: Intent, uid: &str, rv: Option<&str>) {
    let ticket = written.begin("web", Kind::Endpoints, "ns", intent);
    let m = rv.map(|rv| meta("web", uid, rv));
    let answer = rv.map(answer).zip(m.as_ref());
    written.finish(ticket, answer, false);
}

/// What a reconcile sees of Endpoints `web` when the watch's cache holds `cached` (by resourceVersion).
fn view(written: &Record, cached: Option<&str>) -> Option<String> {
    let cached = cached.map(|rv| Arc::new(rv.to_owned()));
    let web = id(Kind::Endpoints, "web");
    written.view(&web, cached).map(|rv| (*rv).clone())
}

fn seen(written: &mut Record, seen: Seen) -> bool {
    written.observe(&"web", &id(Kind::Endpoints, "web"), seen)
}

#[test]
fn an_update_is_viewed_until_the_watch_shows_it() {
    let mut written = Record::default();
    write(&mut written, update("web", "e", "1"), "e", Some("2"));
    assert_eq!(
        view(&written, Some("1")).as_deref(),
        Some("2"),
        "roster's own write"
    );
    assert!(!seen(&mut written, object("e", "2")), "the echo is no news");
    assert_eq!(written.len(Kind::Endpoints), 0);
    assert_eq!(view(&written, Some("2")).as_deref(), Some("2"));
}

#[test]
fn a_newer_foreign_version_shows_the_write_and_is_news() {
    let mut written = Record::default();
    write(&mut written, update("web", "e", "1"), "e", Some("2"));
    assert!(seen(&mut written, object("e", "3")), "someone else's write");
    assert_eq!(view(&written, Some("3")).as_deref(), Some("3"));
}

#[test]
fn an_event_that_came_before_the_answer_leaves_no_entry() {
    let mut written = Record::default();
    let ticket = written.begin("web", Kind::Endpoints, "ns", update("web", "e", "1"));
    assert!(seen(&mut written, object("e", "2")), "not known as roster's yet");
    written.finish(ticket, Some((answer("2"), &meta("web", "e", "2"))), false);
    assert_eq!(written.len(Kind::Endpoints), 0);
}

#[test]
fn events_of_other_objects_do_not_show_a_write() {
    let mut written = Record::default();
    let ticket = written.begin("web", Kind::Endpoints, "ns", update("web", "e", "1"));
    written.observe(&"db", &id(Kind::Endpoints, "db"), object("d", "2"));
    written.observe(&"web", &id(Kind::EndpointSlice, "web"), object("s", "2"));
    written.finish(ticket, Some((answer("2"), &meta("web", "e", "2"))), false);
    assert_eq!(written.len(Kind::Endpoints), 1);
}

#[test]
fn an_update_that_changed_nothing_or_failed_leaves_no_entry() {
    let mut written = Record::default();
    write(&mut written, update("web", "e", "1"), "e", Some("1"));
    assert_eq!(written.len(Kind::Endpoints), 0, "a server-side no-op (#126578)");
    let ticket = written.begin("web", Kind::Endpoints, "ns", update("web", "e", "1"));
    written.finish(ticket, None, true);
    assert_eq!(written.len(Kind::Endpoints), 0, "a failed write");
}

#[test]
fn a_failed_write_keeps_the_writes_before_it() {
    let mut written = Record::default();
    write(&mut written, update("web", "e", "1"), "e", Some("2"));
    let ticket = written.begin("web", Kind::Endpoints, "ns", update("web", "e", "2"));
    written.finish(ticket, None, true);
    assert_eq!(
        view(&written, Some("1")).as_deref(),
        Some("2"),
        "a 409 drops nothing"
    );
}

#[test]
fn late_events_of_a_chain_of_writes_neither_settle_nor_hide_the_last() {
    let mut written = Record::default();
    write(
        &mut written,
        Intent::Create {
            name: Some("web".into()),
        },
        "e",
        Some("12"),
    );
    write(&mut written, update("web", "e", "12"), "e", Some("33"));
    write(&mut written, update("web", "e", "33"), "e", Some("36"));
    for old in ["12", "33"] {
        assert!(!seen(&mut written, object("e", old)), "{old} is old news");
        assert_eq!(
            view(&written, Some(old)).as_deref(),
            Some("36"),
            "after the event of {old}"
        );
    }
    assert!(!seen(&mut written, object("e", "36")));
    assert_eq!(written.len(Kind::Endpoints), 0, "settled by its own event");
    // A delete continues the history; a version outside it is someone else's.
    write(&mut written, update("web", "e", "36"), "e", Some("40"));
    write(&mut written, delete("web", "e", "40"), "e", None);
    assert!(!seen(&mut written, object("e", "40")));
    assert_eq!(
        view(&written, Some("40")),
        None,
        "deleted, whatever late events show"
    );
    assert!(seen(&mut written, object("f", "45")), "re-created by someone");
    assert_eq!(view(&written, Some("45")).as_deref(), Some("45"));
}

#[test]
fn a_delete_is_shown_by_its_deletion_or_another_object_of_the_name() {
    let mut written = Record::default();
    write(&mut written, delete("web", "e", "1"), "e", None);
    assert_eq!(view(&written, Some("1")), None);
    assert!(
        !seen(&mut written, object("e", "7")),
        "still there (a finalizer): no news"
    );
    assert_eq!(written.len(Kind::Endpoints), 1);
    assert!(!seen(&mut written, Seen::Deleted("e".into())), "the echo");
    assert_eq!(written.len(Kind::Endpoints), 0);
}

#[test]
fn a_create_after_a_delete_is_not_hidden_by_the_old_objects_events() {
    let mut written = Record::default();
    write(&mut written, delete("web", "old", "1"), "old", None);
    write(
        &mut written,
        Intent::Create {
            name: Some("web".into()),
        },
        "new",
        Some("3"),
    );
    assert!(!seen(&mut written, Seen::Deleted("old".into())), "old news");
    assert_eq!(view(&written, None).as_deref(), Some("3"));
    assert!(!seen(&mut written, object("new", "3")));
    assert_eq!(written.len(Kind::Endpoints), 0);
}

#[test]
fn someone_deleting_the_object_shows_the_write() {
    let mut written = Record::default();
    write(&mut written, update("web", "e", "1"), "e", Some("2"));
    assert!(seen(&mut written, Seen::Deleted("e".into())), "the loss is news");
    assert_eq!(view(&written, None), None, "the next reconcile sees it gone");
}

fn slice_view(written: &Record, cached: &[&str]) -> Vec<String> {
    let cached: Vec<(Arc<str>, Arc<String>)> = cached
        .iter()
        .map(|n| (Arc::from(*n), Arc::new(format!("cached {n}"))))
        .collect();
    let mut names: Vec<String> = written
        .view_all(Kind::EndpointSlice, &"web", cached)
        .iter()
        .map(|s| (**s).clone())
        .collect();
    names.sort();
    names
}

#[test]
fn a_created_slice_is_viewed_until_its_uid_is_shown() {
    let mut written = Record::default();
    let ticket = written.begin("web", Kind::EndpointSlice, "ns", Intent::Create { name: None });
    written.finish(
        ticket,
        Some((answer("web-abc v5"), &meta("web-abc", "s1", "5"))),
        false,
    );
    assert_eq!(
        slice_view(&written, &["web-old"]),
        ["cached web-old", "web-abc v5"]
    );
    let other = id(Kind::EndpointSlice, "web-xyz");
    assert!(
        written.observe(&"web", &other, object("s2", "6")),
        "another slice of the Service"
    );
    assert_eq!(written.len(Kind::EndpointSlice), 1);
    let mine = id(Kind::EndpointSlice, "web-abc");
    assert!(!written.observe(&"web", &mine, object("s1", "5")));
    assert_eq!(written.len(Kind::EndpointSlice), 0);
}

#[test]
fn a_deleted_slice_is_out_of_the_view_until_its_deletion_is_shown() {
    let mut written = Record::default();
    let intent = Intent::Delete {
        name: "web-old".into(),
        replaced: version("s0", "4"),
    };
    let ticket = written.begin("web", Kind::EndpointSlice, "ns", intent);
    written.finish(ticket, None, false);
    assert_eq!(slice_view(&written, &["web-old", "web-b"]), ["cached web-b"]);
}

#[test]
fn a_create_deleted_before_its_answer_leaves_no_entry() {
    let mut written = Record::default();
    let ticket = written.begin("web", Kind::EndpointSlice, "ns", Intent::Create { name: None });
    let slice = id(Kind::EndpointSlice, "web-abc");
    written.observe(&"web", &slice, object("s1", "5"));
    written.observe(&"web", &slice, Seen::Deleted("s1".into()));
    written.finish(ticket, Some((answer("5"), &meta("web-abc", "s1", "5"))), false);
    assert_eq!(written.len(Kind::EndpointSlice), 0);
}

fn listed(entries: &[(Kind, &str, &str, &str)]) -> HashMap<ObjectId, (&'static str, Version)> {
    entries
        .iter()
        .map(|(kind, name, uid, rv)| (id(*kind, name), ("web", version(uid, rv))))
        .collect()
}

#[test]
fn a_relist_settles_what_its_list_shows() {
    let mut written = Record::default();
    write(&mut written, update("web", "e", "1"), "e", Some("2"));
    written.relist_began(Kind::Endpoints);
    written.relisted(Kind::Endpoints, &listed(&[(Kind::Endpoints, "web", "e", "1")]));
    assert_eq!(written.len(Kind::Endpoints), 1, "the list predates the update");
    written.relisted(Kind::Endpoints, &listed(&[(Kind::Endpoints, "web", "e", "2")]));
    assert_eq!(written.len(Kind::Endpoints), 0);
    write(&mut written, update("web", "e", "2"), "e", Some("3"));
    written.relisted(Kind::Endpoints, &HashMap::new());
    assert_eq!(
        written.len(Kind::Endpoints),
        0,
        "an updated object the list lacks was deleted"
    );
}

#[test]
fn a_relist_without_a_created_object_settles_only_creates_answered_before_it() {
    let mut written = Record::default();
    write(
        &mut written,
        Intent::Create {
            name: Some("web".into()),
        },
        "e",
        Some("5"),
    );
    written.relist_began(Kind::Endpoints);
    let ticket = written.begin(
        "db",
        Kind::Endpoints,
        "ns",
        Intent::Create {
            name: Some("db".into()),
        },
    );
    written.finish(ticket, Some((answer("8"), &meta("db", "d", "8"))), false);
    written.relisted(Kind::Endpoints, &HashMap::new());
    assert_eq!(
        view(&written, None),
        None,
        "answered before the list: deleted since"
    );
    assert_eq!(
        written.keys(Kind::Endpoints),
        ["db"],
        "may have landed after the list was taken"
    );
    written.relisted(Kind::EndpointSlice, &HashMap::new());
    assert_eq!(written.len(Kind::Endpoints), 1, "another kind's relist");
}

#[test]
fn a_relist_during_a_write_is_noted() {
    let mut written = Record::default();
    let ticket = written.begin("web", Kind::EndpointSlice, "ns", Intent::Create { name: None });
    written.relist_began(Kind::EndpointSlice);
    written.relisted(
        Kind::EndpointSlice,
        &listed(&[(Kind::EndpointSlice, "web-abc", "s1", "5")]),
    );
    written.finish(ticket, Some((answer("5"), &meta("web-abc", "s1", "5"))), false);
    assert_eq!(
        written.len(Kind::EndpointSlice),
        0,
        "the list showed the created slice"
    );
}

#[test]
fn a_relist_that_lacks_an_object_being_deleted_shows_the_delete() {
    let mut written = Record::default();
    let ticket = written.begin("web", Kind::Endpoints, "ns", delete("web", "e", "2"));
    written.relist_began(Kind::Endpoints);
    written.relisted(Kind::Endpoints, &HashMap::new());
    written.finish(ticket, None, false);
    assert_eq!(
        written.len(Kind::Endpoints),
        0,
        "the list, taken after the delete began, showed the object gone"
    );
}

#[test]
fn a_relist_begun_before_a_delete_does_not_show_it() {
    let mut written = Record::default();
    written.relist_began(Kind::Endpoints);
    let ticket = written.begin("web", Kind::Endpoints, "ns", delete("web", "e", "2"));
    written.relisted(Kind::Endpoints, &HashMap::new());
    written.finish(ticket, None, false);
    assert_eq!(
        view(&written, Some("2")),
        None,
        "the list may predate the object; the watch after it shows the deletion"
    );
    assert!(
        !seen(&mut written, object("e", "2")),
        "the watch replays the old object"
    );
    assert!(!seen(&mut written, Seen::Deleted("e".into())), "and its deletion");
    assert_eq!(written.len(Kind::Endpoints), 0);
}

#[test]
fn entries_expire() {
    let mut written = Record::default();
    write(&mut written, update("web", "e", "1"), "e", Some("2"));
    let now = Instant::now();
    written.expire(now);
    assert_eq!(written.len(Kind::Endpoints), 1, "fresh entries stay");
    written.expire(now + UNSHOWN_TTL);
    assert_eq!(
        view(&written, Some("1")).as_deref(),
        Some("1"),
        "the watch's cache is trusted again"
    );
}
