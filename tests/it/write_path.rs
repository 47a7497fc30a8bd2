use tiersync::schema::{Tier, SK_LIMITS, SK_PROFILE};
use tiersync::store::{SetTier, StoreError};

use crate::helpers::TestApp;

#[tokio::test]
async fn create_user_writes_both_items_at_version_one_with_the_next_reset() {
    let app = TestApp::spawn().await;
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T15:04:05Z")
        .unwrap()
        .to_utc();
    app.store
        .create_user(&TestApp::user("alice"), Tier::Premium, now)
        .await
        .unwrap();
    assert_eq!(app.recorder.count("TransactWriteItems"), 1);
    assert_eq!(
        app.recorder.calls().len(),
        1,
        "one transaction, nothing else"
    );
    assert_eq!(app.profile("alice").await, Some(("premium".into(), 1)));
    assert_eq!(app.limits("alice").await, Some(("premium".into(), 1)));
    let limits = app.item("alice", SK_LIMITS).await.unwrap();
    assert_eq!(limits["daily_used"].as_n().unwrap(), "0");
    assert_eq!(
        limits["reset_daily_at"].as_s().unwrap(),
        "2026-12-04T00:00:00Z"
    );
}

#[tokio::test]
async fn creating_an_existing_user_is_a_clear_error_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now();
    app.store
        .create_user(&TestApp::user("bob"), Tier::Free, now)
        .await
        .unwrap();
    let err = app
        .store
        .create_user(&TestApp::user("bob"), Tier::Premium, now)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UserExists(ref u) if u.as_str() == "bob"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "user bob already exists");
    assert_eq!(app.profile("bob").await, Some(("free".into(), 1)));
    assert_eq!(app.limits("bob").await, Some(("free".into(), 1)));
}

#[tokio::test]
async fn set_tier_bumps_the_version_only_on_a_real_change_and_never_touches_profile() {
    let app = TestApp::spawn().await;
    let u = TestApp::user("carol");
    let now = chrono::Utc::now();
    app.store.create_user(&u, Tier::Free, now).await.unwrap();
    app.recorder.clear();
    assert_eq!(
        app.store.set_tier(&u, Tier::Premium, now).await.unwrap(),
        SetTier::Changed { tier_version: 2 }
    );
    assert_eq!(
        app.store.set_tier(&u, Tier::Premium, now).await.unwrap(),
        SetTier::Unchanged { tier_version: 2 }
    );
    assert_eq!(
        app.store.set_tier(&u, Tier::Free, now).await.unwrap(),
        SetTier::Changed { tier_version: 3 }
    );
    let calls = app.recorder.calls();
    assert_eq!(calls.len(), 3, "one UpdateItem per set_tier");
    assert!(calls
        .iter()
        .all(|c| c.op == "UpdateItem" && c.sk() == Some(SK_LIMITS)));
    assert_eq!(app.limits("carol").await, Some(("free".into(), 3)));
    assert_eq!(
        app.profile("carol").await,
        Some(("free".into(), 1)),
        "PROFILE is the stream's job"
    );
}

#[tokio::test]
async fn set_tier_on_an_unknown_user_fails_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let err = app
        .store
        .set_tier(&TestApp::user("ghost"), Tier::Premium, chrono::Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UserNotFound(_)), "{err:?}");
    assert!(app.item("ghost", SK_LIMITS).await.is_none());
    assert!(app.item("ghost", SK_PROFILE).await.is_none());
}

#[tokio::test]
async fn set_tier_adopts_a_legacy_item_without_a_version() {
    let app = TestApp::spawn().await;
    use aws_sdk_dynamodb::types::AttributeValue::S;
    app.put_raw(vec![
        ("PK", S("USER#old".into())),
        ("SK", S(SK_LIMITS.into())),
        ("tier", S("free".into())),
    ])
    .await;
    let r = app
        .store
        .set_tier(&TestApp::user("old"), Tier::Premium, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        r,
        SetTier::Changed { tier_version: 1 },
        "missing version counts as 0"
    );
}

#[tokio::test]
async fn get_user_usage_is_exactly_one_get_item() {
    let app = TestApp::spawn().await;
    let u = TestApp::user("dave");
    app.store
        .create_user(&u, Tier::Premium, chrono::Utc::now())
        .await
        .unwrap();
    app.recorder.clear();
    let usage = app
        .store
        .get_user_usage(&u, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        (usage.tier, usage.tier_version, usage.daily_used),
        (Tier::Premium, 1, 0)
    );
    let calls = app.recorder.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].op.as_str(), calls[0].sk()),
        ("GetItem", Some(SK_LIMITS))
    );
    let missing = app
        .store
        .get_user_usage(&TestApp::user("nobody"), chrono::Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::UserNotFound(_)));
}

#[tokio::test]
async fn table_create_is_idempotent() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.store.create_table().await.unwrap(),
        tiersync::store::TableCreate::AlreadyExists
    );
}

#[tokio::test]
async fn table_create_makes_exactly_the_shared_definition() {
    let app = TestApp::spawn().await;
    let t = aws_sdk_dynamodb::Client::new(&app.sdk)
        .describe_table()
        .table_name(&app.table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let def = tiersync::store::TABLE;
    let keys = |ks: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
        ks.iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect()
    };
    let own = |ks: &[(&str, &str)]| -> Vec<(String, String)> {
        ks.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(keys(t.key_schema()), own(def.keys));
    let mut attrs: Vec<_> = t
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_owned(),
                a.attribute_type().as_str().to_owned(),
            )
        })
        .collect();
    attrs.sort();
    let mut want = own(def.attributes);
    want.sort();
    assert_eq!(attrs, want);
    assert_eq!(
        t.stream_specification()
            .unwrap()
            .stream_view_type()
            .unwrap()
            .as_str(),
        def.stream_view
    );
    let gsi = &t.global_secondary_indexes()[0];
    assert_eq!(gsi.index_name(), Some(tiersync::schema::RESET_INDEX));
    assert_eq!(keys(gsi.key_schema()), own(def.reset_index_keys));
    assert_eq!(
        gsi.projection()
            .unwrap()
            .projection_type()
            .unwrap()
            .as_str(),
        "KEYS_ONLY"
    );
    assert_eq!(
        t.billing_mode_summary()
            .unwrap()
            .billing_mode()
            .unwrap()
            .as_str(),
        "PAY_PER_REQUEST"
    );
}
