use super::*;

fn key(csr: &str, node: &str, san: &str) -> ProbeKey {
    ProbeKey {
        csr: csr.to_owned(),
        node: node.to_owned(),
        san: san.parse().expect("address"),
    }
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("timestamp")
}

fn book() -> ProofBook {
    ProofBook::new(ProofConfig {
        max_in_flight: 3,
        max_per_node: 2,
        ..ProofConfig::default()
    })
}

fn opened(book: &ProofBook, key: &ProbeKey, now: Instant) -> Ticket {
    match book.start(key, now, t(0)) {
        Start::Probe(ticket) => ticket,
        other => panic!("expected a probe of {key:?}, got {other:?}"),
    }
}

fn state(book: &ProofBook, key: &ProbeKey) -> Option<ProofState> {
    book.proof(&key.csr, &key.node, key.san)
}

#[tokio::test]
async fn a_receipt_from_the_requester_proves_the_san_once_and_only_that_san() {
    let book = book();
    let now = Instant::now();
    let v4 = key("csr-1", "worker-1", "10.0.0.11");
    let v6 = key("csr-1", "worker-1", "fd00::11");
    let mut ticket = opened(&book, &v4, now);
    let other = opened(&book, &v6, now);
    assert!(matches!(book.start(&v4, now, t(0)), Start::InFlight));
    assert_eq!(state(&book, &v4), Some(ProofState::Probing { since: t(0) }));

    let local = v4.san;
    let outcome = book.receipt("worker-1", &ticket.nonce, local, now, t(1));
    assert_eq!(
        outcome,
        ReceiptOutcome::Accepted {
            csr: "csr-1".to_owned(),
            proven: true
        }
    );
    assert_eq!(
        ticket.receipt.try_recv().ok(),
        Some(Receipt {
            node: "worker-1".to_owned(),
            local
        })
    );
    assert_eq!(
        state(&book, &v4),
        Some(ProofState::Proven { at: t(1), local })
    );
    // Bound to its SAN: the IPv4 probe's nonce proved nothing about the IPv6 SAN.
    assert_eq!(state(&book, &v6), Some(ProofState::Probing { since: t(0) }));
    // Single use: the same receipt again, from anyone, changes nothing.
    for from in ["worker-1", "worker-2"] {
        assert_eq!(
            book.receipt(from, &ticket.nonce, local, now, t(2)),
            ReceiptOutcome::Spent
        );
    }
    assert_eq!(
        state(&book, &v4),
        Some(ProofState::Proven { at: t(1), local })
    );
    // Closing the answered probe keeps its result and frees its slot.
    book.finish(&ticket, &Ending::Received, now, t(3));
    assert_eq!(
        state(&book, &v4),
        Some(ProofState::Proven { at: t(1), local })
    );
    // A proof is made again only when the decision asks (it is older than the max age).
    let Start::Probe(again) = book.start(&v4, now, t(3)) else {
        panic!("a proven SAN can be probed again");
    };
    book.finish(&again, &Ending::Received, now, t(3));
    book.finish(
        &other,
        &Ending::Unanswered {
            what: "test".into(),
            delivered: false,
        },
        now,
        t(3),
    );
    assert_eq!(book.in_flight(), 0);
}

#[tokio::test]
async fn a_receipt_from_another_nodes_stream_is_evidence_against_the_requester() {
    let book = book();
    let now = Instant::now();
    let k = key("csr-1", "squatter", "10.0.0.11");
    let ticket = opened(&book, &k, now);
    let local = k.san;
    assert_eq!(
        book.receipt("worker-1", &ticket.nonce, local, now, t(1)),
        ReceiptOutcome::Accepted {
            csr: "csr-1".to_owned(),
            proven: false
        }
    );
    book.finish(&ticket, &Ending::Received, now, t(1));
    assert_eq!(
        state(&book, &k),
        Some(ProofState::ReceivedByOther {
            node: "worker-1".to_owned(),
            local,
            at: t(1)
        })
    );
    // Probed again, but only after the backoff: addresses move, probes do not flood.
    match book.start(&k, now, t(1)) {
        Start::NotDue(at) => assert_eq!(at, now + ProofConfig::default().retry_min),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        book.start(&k, now + ProofConfig::default().retry_min, t(3)),
        Start::Probe(_)
    ));
    // While it is probed again, the CSR stays held by what the last probe found: no flap
    // to "awaiting a probe" (and a Normal Event) at every retry.
    assert!(matches!(
        state(&book, &k),
        Some(ProofState::ReceivedByOther { .. })
    ));
}

#[tokio::test]
async fn made_up_malformed_and_late_receipts_change_nothing() {
    let book = book();
    let now = Instant::now();
    let k = key("csr-1", "worker-1", "10.0.0.11");
    let ticket = opened(&book, &k, now);
    let local = k.san;
    assert_eq!(
        book.receipt("worker-1", &[9; NONCE_BYTES], local, now, t(1)),
        ReceiptOutcome::OtherReplica,
        "a made-up nonce, or another replica's"
    );
    let mut forged = ticket.nonce;
    forged[NONCE_BYTES - 1] ^= 1;
    assert_eq!(
        book.receipt("worker-1", &forged, local, now, t(1)),
        ReceiptOutcome::Unknown,
        "this replica's tag, but never sent"
    );
    assert_eq!(
        book.receipt("worker-1", &ticket.nonce[..16], local, now, t(1)),
        ReceiptOutcome::Invalid
    );
    // The deadline passes with no receipt.
    book.finish(
        &ticket,
        &Ending::Unanswered {
            what: "no agent reported it within 2s".into(),
            delivered: false,
        },
        now,
        t(2),
    );
    let unanswered = Some(ProofState::Unanswered {
        at: t(2),
        attempts: 1,
        delivered: 0,
        what: "no agent reported it within 2s".to_owned(),
    });
    assert_eq!(state(&book, &k), unanswered);
    // After expiry the real nonce is spent: a late receipt proves nothing.
    assert_eq!(
        book.receipt("worker-1", &ticket.nonce, local, now, t(3)),
        ReceiptOutcome::Spent
    );
    assert_eq!(state(&book, &k), unanswered);
}

#[tokio::test]
async fn backoff_doubles_up_to_its_maximum_and_counts_attempts() {
    let book = book();
    let mut now = Instant::now();
    let k = key("csr-1", "worker-1", "10.0.0.11");
    let mut waits = Vec::new();
    for attempt in 1..=8 {
        let ticket = opened(&book, &k, now);
        book.finish(&ticket, &Ending::Refused, now, t(attempt));
        assert_eq!(
            state(&book, &k),
            Some(ProofState::Refused { at: t(attempt) })
        );
        let Start::NotDue(next) = book.start(&k, now, t(attempt)) else {
            panic!("a refused SAN is not probed again at once");
        };
        waits.push(next - now);
        now = next;
    }
    let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60, 60]);
}

#[tokio::test]
async fn probes_are_limited_per_node_and_overall() {
    let book = book();
    let now = Instant::now();
    let _a = opened(&book, &key("csr-1", "worker-1", "10.0.0.1"), now);
    let _b = opened(&book, &key("csr-1", "worker-1", "10.0.0.2"), now);
    assert!(matches!(
        book.start(&key("csr-2", "worker-1", "10.0.0.3"), now, t(0)),
        Start::Limited("node")
    ));
    let c = opened(&book, &key("csr-3", "worker-2", "10.0.0.4"), now);
    assert!(matches!(
        book.start(&key("csr-4", "worker-3", "10.0.0.5"), now, t(0)),
        Start::Limited("overall")
    ));
    book.finish(
        &c,
        &Ending::Unanswered {
            what: "test".into(),
            delivered: false,
        },
        now,
        t(1),
    );
    assert!(matches!(
        book.start(&key("csr-4", "worker-3", "10.0.0.5"), now, t(1)),
        Start::Probe(_)
    ));
}

#[tokio::test]
async fn deliveries_without_a_receipt_are_counted_in_a_row() {
    let book = book();
    let mut now = Instant::now();
    let k = key("csr-1", "worker-1", "10.0.0.11");
    let mut seen = Vec::new();
    for delivered in [true, true, false, true] {
        let ticket = opened(&book, &k, now);
        let ending = Ending::Unanswered {
            what: "test".into(),
            delivered,
        };
        book.finish(&ticket, &ending, now, t(1));
        if let Some(ProofState::Unanswered { delivered, .. }) = state(&book, &k) {
            seen.push(delivered);
        }
        now += ProofConfig::default().retry_max;
    }
    assert_eq!(seen, [1, 2, 0, 1]);
}

#[tokio::test]
async fn a_probe_ending_after_its_csr_was_forgotten_records_nothing() {
    let book = book();
    let now = Instant::now();
    let k = key("csr-1", "worker-1", "10.0.0.11");
    let ticket = opened(&book, &k, now);
    book.forget_csr("csr-1");
    assert!(matches!(
        book.receipt("worker-1", &ticket.nonce, k.san, now, t(1)),
        ReceiptOutcome::Accepted { .. }
    ));
    book.finish(&ticket, &Ending::Received, now, t(1));
    assert_eq!(
        state(&book, &k),
        None,
        "a decided CSR's results stay forgotten"
    );
    assert_eq!(book.in_flight(), 0);
}

#[tokio::test]
async fn results_are_forgotten_with_their_csr_or_when_stale() {
    let book = book();
    let now = Instant::now();
    let k = key("csr-1", "worker-1", "10.0.0.11");
    let ticket = opened(&book, &k, now);
    book.finish(&ticket, &Ending::Refused, now, t(1));
    book.forget_csr("csr-1");
    assert_eq!(state(&book, &k), None);
    let ticket = opened(&book, &k, now);
    book.finish(&ticket, &Ending::Refused, now, t(1));
    assert_eq!(book.prune(now + Duration::from_secs(60)), 1);
    assert_eq!(book.prune(now + ProofConfig::default().keep), 0);
}
