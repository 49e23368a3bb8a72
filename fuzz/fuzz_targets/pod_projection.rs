//! The pod watch decoder: any bytes either fail to decode or give a projection that reduces to a record
//! without panicking; the record is a pure function of the projection, and survives a serialise/decode round
//! trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roster::cache::{Interner, PodProjection, PodRecord};

fuzz_target!(|data: &[u8]| {
    let Ok(pod) = serde_json::from_slice::<PodProjection>(data) else {
        return;
    };
    let mut interner = Interner::new();
    let record = PodRecord::from_projection(&pod, &mut interner);
    assert!(record.relevant_eq(&record));
    assert_eq!(PodRecord::from_projection(&pod, &mut Interner::new()), record);
    let mut ips = record.ips.to_vec();
    ips.dedup();
    assert_eq!(ips.len(), record.ips.len(), "duplicate pod IPs kept");
    let bytes = serde_json::to_vec(&pod).expect("a decoded projection serialises");
    let again: PodProjection = serde_json::from_slice(&bytes).expect("a serialised projection decodes");
    let again = PodRecord::from_projection(&again, &mut interner);
    assert_eq!(again.ips, record.ips);
    assert_eq!(again.labels, record.labels);
    assert_eq!(again.ports, record.ports);
    assert_eq!(
        (again.ready, again.terminating, again.phase),
        (record.ready, record.terminating, record.phase)
    );
});
