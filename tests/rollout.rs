//! Deploying while serving (issue #7): hot deploys under load through the
//! folder watch and the admin RPCs, sticky canary shares, shadows that are
//! recorded and never returned, attribution drift, and the online fairness
//! monitor. All against the real server through the generated clients.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use candor::{
    config::Config,
    decisions::Durability,
    grpc::pb::{self, admin_service_client::AdminServiceClient},
};
use common::{TestServer, assert_refused, caravan_request, copy_package, edit, model_ref};
use tonic::{Code, transport::Channel};

const MODEL: &str = "caravan-lgbm";

/// A models folder holding caravan-lgbm 1.0.0 (the default) and 1.1.0.
fn models_folder() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    copy_package("caravan-lgbm/1.0.0", &models);
    copy_package("caravan-lgbm/1.1.0", &models);
    (tmp, models)
}

fn config(models: &Path) -> Config {
    let mut config = common::test_config();
    config.models_dir = models.to_path_buf();
    config
}

/// Stages a copy of the bundled 1.1.0 as `version` outside the folder and
/// moves it in with one rename, as an engineer deploying by hand should.
fn stage_version(models: &Path, version: &str) -> PathBuf {
    let staging = models.parent().unwrap().join("staging");
    let staged = copy_package("caravan-lgbm/1.1.0", &staging);
    let manifest = staged.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("version = \"1.1.0\"\n"));
    std::fs::write(
        &manifest,
        text.replacen(
            "version = \"1.1.0\"\n",
            &format!("version = \"{version}\"\n"),
            1,
        ),
    )
    .unwrap();
    let target = models.join(MODEL).join(version);
    std::fs::rename(&staged, &target).unwrap();
    target
}

async fn admin(server: &TestServer) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(server.channel().await)
}

/// The shadow outputs of `decision_id`, once recorded (they are computed
/// after the answer).
async fn shadow_outputs(
    client: &mut AdminServiceClient<Channel>,
    decision_id: &str,
) -> Vec<pb::ShadowOutput> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let got = client
                .get_shadow_outputs(pb::GetShadowOutputsRequest {
                    decision_id: decision_id.to_owned(),
                })
                .await
                .unwrap()
                .into_inner();
            if !got.outputs.is_empty() {
                return got.outputs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the shadow output is recorded")
}

/// The rollout GetRollout reports for the model.
async fn rollout_now(server: &TestServer) -> pb::Rollout {
    admin(server)
        .await
        .get_rollout(pb::GetRolloutRequest {
            model: MODEL.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn set_rollout(
    server: &TestServer,
    production: &str,
    canary: &str,
    percent: f64,
    shadows: &[&str],
) -> Result<pb::Rollout, tonic::Status> {
    admin(server)
        .await
        .set_rollout(pb::SetRolloutRequest {
            model: MODEL.into(),
            production: production.into(),
            canary: canary.into(),
            canary_percent: percent,
            shadows: shadows.iter().map(|s| (*s).to_owned()).collect(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Whether `version` is loaded within a minute (the folder watch settles
/// for half a second, then gates and loads).
async fn deployed_within_a_minute(server: &TestServer, version: &str) -> bool {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !loaded_versions(server).await.contains(version) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok()
}

async fn loaded_versions(server: &TestServer) -> BTreeSet<String> {
    let list = server
        .models()
        .await
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    list.models
        .iter()
        .filter(|m| m.name == MODEL)
        .flat_map(|m| &m.versions)
        .map(|v| v.identity.as_ref().unwrap().version.clone())
        .collect()
}

fn sha256_of(package: &Path) -> String {
    common::sha256_hex(&std::fs::read(package.join("model.onnx")).unwrap())
}

/// A models folder removed and made anew (a sync tool, a swap of folders)
/// is watched in its turn: a package moved into the new folder deploys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_follows_a_models_folder_made_anew() {
    let (_tmp, models) = models_folder();
    let server = TestServer::start_with(config(&models)).await;
    std::fs::rename(&models, models.with_extension("old")).unwrap();
    std::fs::create_dir(&models).unwrap();
    // The watch sees the new folder, then a package moved into it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::create_dir(models.join(MODEL)).unwrap();
    stage_version(&models, "1.2.0");
    let watched = deployed_within_a_minute(&server, "1.2.0").await;
    assert!(watched, "the new folder's package was not deployed");
    // Removed and made anew in place, where the file system may give the
    // new folder the old one's inode.
    std::fs::remove_dir_all(&models).unwrap();
    std::fs::create_dir(&models).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::create_dir(models.join(MODEL)).unwrap();
    stage_version(&models, "1.3.0");
    let watched = deployed_within_a_minute(&server, "1.3.0").await;
    assert!(watched, "the folder made anew in place was not watched");
    server.stop().await;
}

/// A new version arrives through the folder watch and becomes production,
/// and the old one is unloaded, while clients score without pause: no call
/// fails, and every answer names exactly one loaded artefact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_deploy_under_load_drops_nothing() {
    let (_tmp, models) = models_folder();
    let mut config = config(&models);
    config.decisions.durability = Durability::Async;
    let server = TestServer::start_with(config).await;
    let shas: BTreeMap<String, String> = ["1.0.0", "1.1.0"]
        .iter()
        .map(|v| ((*v).to_owned(), sha256_of(&models.join(MODEL).join(v))))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let mut scoring = server.scoring().await;
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut request = caravan_request();
                request.subject_id = format!("load-{c}-{i}");
                i += 1;
                let sent = std::time::Instant::now();
                let answer = scoring.score(request).await.map(|r| {
                    let d = r.into_inner().decision.unwrap();
                    let id = d.model.unwrap();
                    (id.version, id.sha256)
                });
                answers.push((sent, answer));
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let deployed = stage_version(&models, "1.2.0");
    let sha_new = sha256_of(&deployed);
    let watched = deployed_within_a_minute(&server, "1.2.0").await;
    assert!(watched, "the folder watch did not deploy 1.2.0");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rollout = set_rollout(&server, "1.2.0", "", 0.0, &[]).await.unwrap();
    assert_eq!(rollout.production, "1.2.0");
    let switched = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unloaded = admin(&server)
        .await
        .unload_model(pb::ModelVersionRequest {
            model: MODEL.into(),
            version: "1.0.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unloaded.unloaded.len(), 1);
    assert_eq!(unloaded.unloaded[0].version, "1.0.0");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut by_version: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for client in clients {
        for (sent, answer) in client.await.unwrap() {
            let (version, sha) = answer.unwrap_or_else(|s| panic!("a call failed: {s:?}"));
            let want = if version == "1.2.0" {
                &sha_new
            } else {
                &shas[&version]
            };
            assert_eq!(&sha, want, "{version} answered with another artefact");
            if sent > switched {
                assert_eq!(
                    version, "1.2.0",
                    "a call sent after the switch got {version}"
                );
            }
            *by_version.entry(version).or_default() += 1;
            total += 1;
        }
    }
    assert_eq!(
        by_version.keys().cloned().collect::<Vec<_>>(),
        ["1.0.0", "1.2.0"],
        "{by_version:?}"
    );
    assert!(total > 40, "too little load to show anything: {total}");
    assert_eq!(
        loaded_versions(&server).await,
        BTreeSet::from(["1.1.0".to_owned(), "1.2.0".to_owned()])
    );
    // The unload is kept in the model's rollout file: a restart keeps it.
    let file = std::fs::read_to_string(models.join(MODEL).join("rollout.toml")).unwrap();
    assert!(file.contains("unloaded = [\"1.0.0\"]"), "{file}");
    server.stop().await;
}

/// The canary gets its configured share of subjects, within ±2 percentage
/// points over 10,000 subjects, and each subject always gets the same
/// version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_share_is_sticky_per_subject() {
    let (_tmp, models) = models_folder();
    let mut config = config(&models);
    config.decisions.durability = Durability::Off;
    let server = TestServer::start_with(config).await;
    let rollout = set_rollout(&server, "1.0.0", "1.1.0", 15.0, &[])
        .await
        .unwrap();
    assert_eq!(
        (rollout.canary.as_str(), rollout.canary_percent),
        ("1.1.0", 15.0)
    );

    let subjects = 10_000;
    let score_all = |ids: Vec<usize>| {
        let server = &server;
        async move {
            let mut tasks = Vec::new();
            for chunk in ids.chunks(ids.len().div_ceil(8)) {
                let chunk = chunk.to_vec();
                let mut scoring = server.scoring().await;
                tasks.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    for i in chunk {
                        let mut request = caravan_request();
                        request.subject_id = format!("person-{i}");
                        let d = scoring.score(request).await.unwrap().into_inner();
                        got.push((i, d.decision.unwrap().model.unwrap().version));
                    }
                    got
                }));
            }
            let mut all = BTreeMap::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        }
    };
    let first = score_all((0..subjects).collect()).await;
    let canary = first.values().filter(|v| *v == "1.1.0").count();
    let share = 100.0 * canary as f64 / subjects as f64;
    assert!((share - 15.0).abs() <= 2.0, "canary share {share:.2}%");
    assert!(first.values().all(|v| v == "1.0.0" || v == "1.1.0"));

    let again = score_all((0..subjects).step_by(7).collect()).await;
    for (i, version) in &again {
        assert_eq!(&first[i], version, "subject {i} switched versions");
    }
    // A request without a subject cannot be placed: it gets production.
    let mut anonymous = caravan_request();
    anonymous.subject_id.clear();
    let d = server.score_one(anonymous).await;
    assert_eq!(d.model.unwrap().version, "1.0.0");
    // The alias reaches the canary directly.
    let mut aliased = caravan_request();
    aliased.model = model_ref(MODEL, "canary");
    assert_eq!(
        server.score_one(aliased).await.model.unwrap().version,
        "1.1.0"
    );
    server.stop().await;
}

/// Shadow versions score production's requests: their outputs and
/// attributions are recorded beside the live decision and never returned,
/// and the drift report compares the two versions' attributions.
/// Attributions in different units (log-odds against the score's) cannot
/// be compared: the drift report says so instead of showing drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_between_attributions_in_different_units_is_refused() {
    let (_tmp, models) = models_folder();
    // The MLP, explained in the score's units, as a version of the model.
    let staged = copy_package("caravan-mlp/1.0.0", &models.parent().unwrap().join("mlp"));
    let manifest = staged.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replacen(
        "name = \"caravan-mlp\"\nversion = \"1.0.0\"",
        "name = \"caravan-lgbm\"\nversion = \"3.0.0\"",
        1,
    );
    std::fs::write(&manifest, text).unwrap();
    std::fs::rename(&staged, models.join(MODEL).join("3.0.0")).unwrap();
    let server = TestServer::start_with(config(&models)).await;
    set_rollout(&server, "1.0.0", "", 0.0, &["3.0.0"])
        .await
        .unwrap();
    let refused = admin(&server)
        .await
        .attribution_drift(pb::AttributionDriftRequest {
            model: MODEL.into(),
            candidate: "3.0.0".into(),
            since_unix_ms: 0,
        })
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        Code::FailedPrecondition,
        "candidate: caravan-lgbm 3.0.0's attributions are in score units and production 1.0.0's in log_odds",
    );
}

/// A shadow version is judged by its own manifest, as a live call to it
/// would be: a feature it declares as the person's is masked for it even
/// where production's manifest calls the same column context, and a
/// version holding special-category data is never scored, nor named
/// production in place of one that makes ad decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_are_judged_by_their_own_manifests() {
    let (_tmp, models) = models_folder();
    let declare = |version: &str, category: &str, purposes: &str| {
        let staged = stage_version(&models, version);
        let manifest = staged.join("manifest.toml");
        let text = std::fs::read_to_string(&manifest)
            .unwrap()
            .replacen(
                "category = \"zip_code_demographics\"\nsource = \"zip_code_aggregate\"\nreason_group = \"your_info\"\nreason = { en = \"the typical household size",
                &format!("category = \"{category}\"\nsource = \"zip_code_aggregate\"\nreason_group = \"your_info\"\nreason = {{ en = \"the typical household size"),
                1,
            )
            .replacen(
                "purposes = [\"personalised_advertising\"]",
                &format!("purposes = [\"{purposes}\"]"),
                1,
            );
        assert!(text.contains(&format!("category = \"{category}\"")));
        std::fs::write(&manifest, text).unwrap();
    };
    declare("4.0.0", "contextual", "personalised_advertising");
    declare("5.0.0", "precise_geolocation", "personalised_advertising");
    declare("6.0.0", "health", "measurement");
    // A rollout file edited by hand may name it; SetRollout refuses to.
    std::fs::write(
        models.join(MODEL).join("rollout.toml"),
        "production = \"4.0.0\"\nshadows = [\"5.0.0\", \"6.0.0\"]\n",
    )
    .unwrap();
    let server = TestServer::start_with(config(&models)).await;
    let refused = set_rollout(&server, "4.0.0", "", 0.0, &["5.0.0", "6.0.0"])
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        Code::FailedPrecondition,
        "shadows[1]: caravan-lgbm 6.0.0 takes special-category data",
    );
    // Nor production, which would refuse every request naming no version.
    let refused = set_rollout(&server, "6.0.0", "", 0.0, &[])
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        Code::FailedPrecondition,
        "production: caravan-lgbm 6.0.0 takes special-category data",
    );
    // A hand-edited file that names it so is refused as SetRollout refuses
    // it: production falls to the manifests' choice among the others.
    let rollout_file = models.join(MODEL).join("rollout.toml");
    let hand_edited = std::fs::read_to_string(&rollout_file).unwrap();
    for (edited, field) in [
        ("production = \"6.0.0\"\n", "production"),
        (
            "production = \"4.0.0\"\n[canary]\nversion = \"6.0.0\"\npercent = 50.0\n",
            "canary.version",
        ),
    ] {
        std::fs::write(&rollout_file, edited).unwrap();
        let reloaded = admin(&server)
            .await
            .reload_models(pb::ReloadModelsRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(
            reloaded
                .refused
                .iter()
                .any(|r| r.contains(&format!("{field}: "))
                    && r.contains("6.0.0 takes special-category data")),
            "{field}: {:?}",
            reloaded.refused
        );
        let now = rollout_now(&server).await;
        assert_ne!(now.production, "6.0.0", "{now:?}");
        assert!(now.canary.is_empty(), "{now:?}");
        server.score_one(caravan_request()).await;
    }
    std::fs::write(&rollout_file, hand_edited).unwrap();
    admin(&server)
        .await
        .reload_models(pb::ReloadModelsRequest {})
        .await
        .unwrap();
    let mut request = caravan_request();
    request.subject_id = "young".into();
    request.context.as_mut().unwrap().age_status = pb::AgeStatus::Minor as i32;
    let live = server.score_one(request).await;
    let masked = &live.provenance.as_ref().unwrap().masked_features;
    assert!(!masked.iter().any(|f| f == "MGEMOMV"), "{masked:?}");
    let outputs = shadow_outputs(&mut admin(&server).await, &live.decision_id).await;
    let versions: Vec<&str> = outputs
        .iter()
        .map(|o| o.model.as_ref().unwrap().version.as_str())
        .collect();
    assert_eq!(
        versions,
        ["5.0.0"],
        "the special-category version is never scored"
    );
    let feature = outputs[0]
        .attribution
        .as_ref()
        .unwrap()
        .features
        .iter()
        .find(|f| f.name == "MGEMOMV")
        .unwrap();
    assert!(
        feature.masked,
        "a minor's precise location reached the shadow"
    );
    // Nor does it take production at a start without a rollout, marked as
    // the default: the manifests' choice falls among the other versions.
    server.stop().await;
    let version_dir = |v: &str| models.join(MODEL).join(v);
    edit(
        &version_dir("1.0.0").join("manifest.toml"),
        "default = true\n",
        "",
    );
    edit(
        &version_dir("6.0.0").join("manifest.toml"),
        "version = \"6.0.0\"\n",
        "version = \"6.0.0\"\ndefault = true\n",
    );
    std::fs::remove_file(models.join(MODEL).join("rollout.toml")).unwrap();
    let server = TestServer::start_with(config(&models)).await;
    assert_eq!(rollout_now(&server).await.production, "5.0.0");
    server.score_one(caravan_request()).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_outputs_are_recorded_never_returned() {
    let (_tmp, models) = models_folder();
    let mut config = config(&models);
    config.decisions.min_segment_size = 20;
    let server = TestServer::start_with(config).await;
    set_rollout(&server, "1.0.0", "", 0.0, &["1.1.0"])
        .await
        .unwrap();
    // Before any decision there is nothing to compare, and no ranks.
    let empty = admin(&server)
        .await
        .attribution_drift(pb::AttributionDriftRequest {
            model: MODEL.into(),
            candidate: "1.1.0".into(),
            since_unix_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::FailedPrecondition, "{empty:?}");
    assert!(
        empty
            .message()
            .starts_with("candidate: caravan-lgbm 1.1.0 has no decision"),
        "{empty:?}"
    );

    let mut decisions = Vec::new();
    for i in 0..20 {
        let mut request = caravan_request();
        request.subject_id = format!("shadowed-{i}");
        request.explain = Some(pb::ExplainOptions {
            mode: pb::ExplainMode::Inline as i32,
            method: 0,
        });
        let d = server.score_one(request).await;
        let model = d.model.as_ref().unwrap();
        assert_eq!(model.version, "1.0.0", "the shadow's answer was returned");
        decisions.push(d);
    }
    // What 1.1.0 says about the same row when asked directly.
    let mut pinned = caravan_request();
    pinned.model = model_ref(MODEL, "1.1.0");
    let direct = server.score_one(pinned).await.score.unwrap();

    let mut client = admin(&server).await;
    for d in &decisions {
        let outputs = shadow_outputs(&mut client, &d.decision_id).await;
        assert_eq!(outputs.len(), 1);
        let shadow = &outputs[0];
        assert_eq!(shadow.model.as_ref().unwrap().version, "1.1.0");
        assert!((shadow.score - direct).abs() < 1e-9);
        let a = shadow.attribution.as_ref().unwrap();
        let sum: f64 = a.features.iter().map(|f| f.contribution).sum();
        assert!((a.base_value + sum - a.margin).abs() < 1e-6);
    }

    // The person's access export holds what the shadow answered about them.
    let json = export(&server, "shadowed-0").await;
    let shadows = &json["decisions"][0]["shadow_scores"];
    assert_eq!(shadows[0]["model"]["version"], "1.1.0", "{shadows}");
    assert!((shadows[0]["score"].as_f64().unwrap() - direct).abs() < 1e-9);

    // A decision never made has no outputs to give, which is not an empty
    // list of them.
    let never = client
        .get_shadow_outputs(pb::GetShadowOutputsRequest {
            decision_id: "0190a6f2-0000-7000-8000-000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(never.code(), Code::NotFound, "{never:?}");

    let drift = client
        .attribution_drift(pb::AttributionDriftRequest {
            model: MODEL.into(),
            candidate: "1.1.0".into(),
            since_unix_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(drift.comparison, "shadow");
    assert_eq!((drift.live_decisions, drift.candidate_decisions), (20, 20));
    let live = decisions[0].attribution.as_ref().unwrap();
    assert_eq!(drift.features.len(), live.features.len());
    // All 20 requests carry the same row: the live mean |φ| is that row's.
    let top = &drift.features[0];
    assert_eq!(top.live_rank, 1);
    let phi = live
        .features
        .iter()
        .find(|f| f.name == top.feature)
        .unwrap()
        .contribution;
    assert!((top.live_mean_abs - phi.abs()).abs() < 1e-9);
    assert!(drift.features.iter().any(|f| f.rank_change != 0));
    // One person's attributions are no aggregate to hand out: a window
    // that holds only the last decision (its time is in its id) is refused.
    let few = client
        .attribution_drift(pb::AttributionDriftRequest {
            model: MODEL.into(),
            candidate: "1.1.0".into(),
            since_unix_ms: {
                let at = decisions.last().unwrap().decided_at.unwrap();
                at.seconds * 1000 + i64::from(at.nanos / 1_000_000)
            },
        })
        .await
        .unwrap_err();
    assert_eq!(few.code(), Code::FailedPrecondition, "{few:?}");
    assert!(
        few.message()
            .contains("fewer than decisions.min_segment_size (20)"),
        "{few:?}"
    );
    // "canary" names the canary, as in scoring; this rollout has none. A
    // time before 1970 is no time to start from.
    for (candidate, since, code, says) in [
        (
            "canary",
            0,
            Code::NotFound,
            "candidate: caravan-lgbm has no canary",
        ),
        ("1.1.0", -5, Code::InvalidArgument, "since_unix_ms: -5"),
    ] {
        let e = client
            .attribution_drift(pb::AttributionDriftRequest {
                model: MODEL.into(),
                candidate: candidate.into(),
                since_unix_ms: since,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().starts_with(says), "{e:?}");
    }

    // A version in use cannot be unloaded.
    let refused = client
        .unload_model(pb::ModelVersionRequest {
            model: MODEL.into(),
            version: "1.1.0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("shadow"), "{refused:?}");
    server.stop().await;
}

/// Rollout and deploy requests that cannot be honoured are refused with
/// the status and the field that say why, and change nothing.
#[tokio::test]
async fn bad_rollouts_and_deploys_name_the_field() {
    let (_tmp, models) = models_folder();
    let unwatched = Config {
        watch_models: false,
        ..config(&models)
    };
    let server = TestServer::start_with(unwatched.clone()).await;
    for (production, canary, percent, shadows, code, field) in [
        (
            "1.0.0",
            "1.1.0",
            150.0,
            vec![],
            Code::InvalidArgument,
            "canary_percent:",
        ),
        (
            "1.0.0",
            "",
            5.0,
            vec![],
            Code::InvalidArgument,
            "canary_percent",
        ),
        (
            "1.0.0",
            "9.9.9",
            5.0,
            vec![],
            Code::FailedPrecondition,
            "canary:",
        ),
        ("x", "", 0.0, vec![], Code::InvalidArgument, "production"),
        (
            "1.0.0",
            "",
            0.0,
            vec!["1.3.0"],
            Code::FailedPrecondition,
            "shadows[0]:",
        ),
        (
            "1.0.0",
            "1.0.0",
            5.0,
            vec![],
            Code::InvalidArgument,
            "canary:",
        ),
        // An empty production is the manifest's default (1.0.0): a canary
        // or shadow of that version would take production by accident.
        ("", "1.0.0", 5.0, vec![], Code::InvalidArgument, "canary:"),
        (
            "",
            "",
            0.0,
            vec!["1.0.0"],
            Code::InvalidArgument,
            "shadows[0]:",
        ),
    ] {
        let e = set_rollout(&server, production, canary, percent, &shadows)
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().starts_with(field), "{field}: {e:?}");
    }
    assert!(!models.join(MODEL).join("rollout.toml").exists());

    let mut client = admin(&server).await;
    let missing = client
        .load_model(pb::ModelVersionRequest {
            model: MODEL.into(),
            version: "4.0.0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert!(missing.message().starts_with("version: "), "{missing:?}");
    // A model the folder does not have is the model's fault, not the
    // version's; so is one GetRollout does not know.
    let unknown = client
        .load_model(pb::ModelVersionRequest {
            model: "nope".into(),
            version: "1.0.0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(unknown.message().starts_with("model: "), "{unknown:?}");
    let unknown = client
        .get_rollout(pb::GetRolloutRequest {
            model: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(unknown.message().starts_with("model: "), "{unknown:?}");
    let escape = client
        .load_model(pb::ModelVersionRequest {
            model: "../etc".into(),
            version: "1.0.0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(escape.code(), Code::InvalidArgument, "{escape:?}");
    // An empty request names the first field it lacks.
    let empty = client
        .load_model(pb::ModelVersionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    assert_eq!(empty.message(), "model: is required");

    // A package whose golden rows no longer reproduce fails the gate.
    let broken = stage_version(&models, "1.3.0");
    common::break_first_golden(&broken);
    let refused = client
        .load_model(pb::ModelVersionRequest {
            model: MODEL.into(),
            version: "1.3.0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("validation gate"), "{refused:?}");
    for named in ["golden_rows_reproduce", "golden.csv: row 1's score"] {
        assert!(refused.message().contains(named), "{named}: {refused:?}");
    }
    assert!(!loaded_versions(&server).await.contains("1.3.0"));

    // A served version whose package broke the same way is not deployed
    // by the call either: the version loaded before keeps serving, and
    // the call says so instead of answering OK.
    let served = models.join(MODEL).join("1.0.0");
    let golden = std::fs::read_to_string(served.join("golden.csv")).unwrap();
    common::break_first_golden(&served);
    let kept = client
        .load_model(pb::ModelVersionRequest {
            model: MODEL.into(),
            version: "1.0.0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(kept.code(), Code::FailedPrecondition, "{kept:?}");
    assert!(
        kept.message().contains("golden_rows_reproduce")
            && kept.message().contains("keeps serving"),
        "{kept:?}"
    );
    std::fs::write(served.join("golden.csv"), golden).unwrap();
    // The others still serve.
    assert_eq!(
        server
            .score_one(caravan_request())
            .await
            .model
            .unwrap()
            .version,
        "1.0.0"
    );
    server.stop().await;

    // A restart is a deploy too: the same bytes stay refused.
    let restarted = TestServer::start_with(Config {
        gate_at_startup: true,
        ..unwatched
    })
    .await;
    let versions = loaded_versions(&restarted).await;
    assert!(!versions.contains("1.3.0"), "{versions:?}");
    assert!(
        versions.contains("1.0.0") && versions.contains("1.1.0"),
        "{versions:?}"
    );
    restarted.stop().await;
}

/// Audit-only attributes feed the fairness monitor's per-group selection
/// rates; a group selected under four-fifths as often is flagged, in the
/// report and the metrics; the attributes are stored nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fairness_monitor_flags_disparate_selection() {
    let (tmp, models) = models_folder();
    let mut config = config(&models);
    config.fairness.min_group_decisions = 10;
    let database = config.database.clone();
    let server = TestServer::start_with(config).await;
    let threshold = 0.09127;
    let golden = common::golden(&models.join(MODEL).join("1.0.0"));
    let (high, low): (Vec<_>, Vec<_>) = golden
        .rows
        .iter()
        .zip(&golden.scores)
        .partition(|(_, s)| **s >= threshold);
    assert!(high.len() >= 20 && low.len() >= 20);
    // Group "a": every row selected; group "b": a quarter of them.
    let sentinel = "band-7f3a9c";
    let batch = |group: &str, rows: Vec<&BTreeMap<String, pb::FeatureValue>>| {
        let mut context = common::us_adult().unwrap();
        context.audit_attributes = [("age_band".to_owned(), group.to_owned())].into();
        pb::ScoreBatchRequest {
            model: model_ref(MODEL, ""),
            subject_id: format!("subject-{group}"),
            context: Some(context),
            rows: rows
                .into_iter()
                .map(|features| pb::BatchRow {
                    features: pb::features(features.clone()),
                    ..Default::default()
                })
                .collect(),
            explain: None,
        }
    };
    let mut scoring = server.scoring().await;
    let a: Vec<_> = high.iter().take(20).map(|(r, _)| *r).collect();
    let b: Vec<_> = high
        .iter()
        .take(5)
        .chain(low.iter().take(15))
        .map(|(r, _)| *r)
        .collect();
    scoring.score_batch(batch("a", a)).await.unwrap();
    scoring.score_batch(batch(sentinel, b)).await.unwrap();

    let report = admin(&server)
        .await
        .fairness_report(pb::FairnessReportRequest {
            model: MODEL.into(),
            attribute: "age_band".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.attributes.len(), 1);
    let age = &report.attributes[0];
    let rate = |g: &str| {
        age.groups
            .iter()
            .find(|x| x.group == g)
            .map(|x| (x.decisions, x.selection_rate))
            .unwrap()
    };
    assert_eq!(rate("a"), (20, 1.0));
    assert_eq!(rate(sentinel), (20, 0.25));
    assert!((age.disparate_impact.unwrap() - 0.25).abs() < 1e-12);
    assert!(age.flagged);

    let gateway = server.gateway.clone();
    let text = tokio::task::spawn_blocking(move || gateway.metrics().render(&gateway))
        .await
        .unwrap();
    assert!(
        text.contains(
            "candor_fairness_disparate_impact{model=\"caravan-lgbm\",attribute=\"age_band\"} 0.25"
        ),
        "{text}"
    );
    assert!(
        text.contains("candor_fairness_flagged{model=\"caravan-lgbm\",attribute=\"age_band\"} 1")
    );
    // A model that does not exist has no report, rather than an empty one.
    let unknown = admin(&server)
        .await
        .fairness_report(pb::FairnessReportRequest {
            model: "no-such-model".into(),
            attribute: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(
        unknown
            .message()
            .starts_with("model: no model named \"no-such-model\""),
        "{unknown:?}"
    );
    // Nor does an attribute name no request can carry.
    let misspelt = admin(&server)
        .await
        .fairness_report(pb::FairnessReportRequest {
            model: MODEL.into(),
            attribute: "AGE_BAND".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(misspelt.code(), Code::InvalidArgument, "{misspelt:?}");
    assert!(
        misspelt.message().starts_with("attribute: \"AGE_BAND\""),
        "{misspelt:?}"
    );
    // Nor one the monitor never counts for the model.
    let unmonitored = admin(&server)
        .await
        .fairness_report(pb::FairnessReportRequest {
            model: MODEL.into(),
            attribute: "shoe_size".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unmonitored.code(), Code::NotFound, "{unmonitored:?}");
    assert!(
        unmonitored
            .message()
            .starts_with("attribute: \"shoe_size\" is not monitored for caravan-lgbm"),
        "{unmonitored:?}"
    );

    // Bad attributes are refused, naming the field.
    let mut context = common::us_adult().unwrap();
    context.audit_attributes = [("Age Band".to_owned(), "x".to_owned())].into();
    let mut request = caravan_request();
    request.context = Some(context);
    let e = scoring.score(request).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("context.audit_attributes"), "{e:?}");

    // Only the attributes the model's manifest audits are counted: a
    // caller's own names cannot take the monitor's places, and the
    // overflow group is not a group a caller may name.
    for (name, group, says) in [
        (
            "zz_made_up",
            "x",
            "context.audit_attributes[\"zz_made_up\"]: not monitored",
        ),
        (
            "age_band",
            "(other)",
            "context.audit_attributes[\"age_band\"]: (other)",
        ),
    ] {
        let mut context = common::us_adult().unwrap();
        context.audit_attributes = [(name.to_owned(), group.to_owned())].into();
        let mut request = caravan_request();
        request.context = Some(context);
        let e = scoring.score(request).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with(says), "{e:?}");
    }

    server.stop().await;
    // Never stored: not in the database file, its WAL, or anything beside
    // (the package copies' folder too).
    let mut files = vec![database.parent().unwrap().to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes
                .windows(sentinel.len())
                .any(|w| w == sentinel.as_bytes()),
            "an audit attribute was stored"
        );
    }
    drop(tmp);
}

/// The first page of `subject`'s access export, as JSON.
async fn export(server: &TestServer, subject: &str) -> serde_json::Value {
    let page =
        pb::explanation_service_client::ExplanationServiceClient::new(server.channel().await)
            .export_subject_data(pb::ExportSubjectDataRequest {
                subject_id: subject.into(),
                language: "en".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
    serde_json::from_str(&page.export_json).unwrap()
}

/// A decision of 1.0.0 for `subject`, its attributions left to the first
/// look-up; then 1.1.0 is promoted and 1.0.0 unloaded.
async fn decide_then_retire(server: &TestServer, subject: &str) -> pb::Decision {
    let mut request = caravan_request();
    request.subject_id = subject.into();
    request.model = model_ref(MODEL, "1.0.0");
    let decided = server.score_one(request).await;
    assert_eq!(
        decided.explanation_status,
        pb::ExplanationStatus::OnRequest as i32
    );
    set_rollout(server, "1.1.0", "", 0.0, &[]).await.unwrap();
    admin(server)
        .await
        .unload_model(pb::ModelVersionRequest {
            model: MODEL.into(),
            version: "1.0.0".into(),
        })
        .await
        .unwrap();
    assert!(!loaded_versions(server).await.contains("1.0.0"));
    decided
}

/// Unloading a version ends its serving, not people's right to an
/// explanation: a decision it made whose attributions were left to the
/// first look-up is explained from the same artefact, loaded back from the
/// models folder, and a different artefact under its name is refused.
#[tokio::test]
async fn a_retired_versions_decisions_are_still_explained() {
    let (_tmp, models) = models_folder();
    let server = TestServer::start_with(config(&models)).await;
    let decided = decide_then_retire(&server, "retiree").await;

    let mut why =
        pb::explanation_service_client::ExplanationServiceClient::new(server.channel().await);
    let ask = pb::GetExplanationRequest {
        decision_id: decided.decision_id.clone(),
        audience: pb::Audience::Engineer as i32,
        language: "en".into(),
    };
    // Another artefact under the retired version's name is not it: the
    // copy kept while it served explains the decision.
    let onnx = models.join(MODEL).join("1.0.0").join("model.onnx");
    let original = std::fs::read(&onnx).unwrap();
    std::fs::write(&onnx, [&original[..], b"\0"].concat()).unwrap();
    let answer = why.get_explanation(ask).await.unwrap().into_inner();
    assert_eq!(answer.served_from, "computed");
    let Some(pb::get_explanation_response::View::Engineer(view)) = answer.view else {
        panic!("{answer:?}");
    };
    let attribution = view.attribution.unwrap();
    assert_eq!(attribution.features.len(), 78);
    assert!(attribution.additivity_residual <= 1e-5 * attribution.margin.abs().max(1.0));
    // The person's access export explains it with the same artefact.
    let json = export(&server, "retiree").await;
    let reasons = json["decisions"][0]["why"]["reasons"].to_string();
    assert!(!reasons.contains("no longer in use"), "{reasons}");
    assert_eq!(json["decisions"][0]["why"]["basis"], "profiling");
    server.stop().await;
}

/// A decision stays explainable after its version is unloaded and its
/// folder removed, also after a restart: the gateway kept a copy of the
/// package when it served.
#[tokio::test]
async fn a_removed_versions_decisions_are_explained_after_a_restart() {
    let (_tmp, models) = models_folder();
    let config = config(&models);
    let server = TestServer::start_with(config.clone()).await;
    let decided = decide_then_retire(&server, "gone").await;
    server.stop().await;
    std::fs::remove_dir_all(models.join(MODEL).join("1.0.0")).unwrap();

    let restarted = TestServer::start_with(config).await;
    let mut why =
        pb::explanation_service_client::ExplanationServiceClient::new(restarted.channel().await);
    let answer = why
        .get_explanation(pb::GetExplanationRequest {
            decision_id: decided.decision_id.clone(),
            audience: pb::Audience::Engineer as i32,
            language: "en".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.served_from, "computed");
    let Some(pb::get_explanation_response::View::Engineer(view)) = answer.view else {
        panic!("{answer:?}");
    };
    let attribution = view.attribution.unwrap();
    assert_eq!(attribution.features.len(), 78);
    assert!(
        (attribution.margin
            - attribution.base_value
            - attribution
                .features
                .iter()
                .map(|f| f.contribution)
                .sum::<f64>())
        .abs()
            < 1e-5
    );
    restarted.stop().await;
}

/// Two retired versions that share an artefact are each explained with
/// their own manifest (its model card, what may be named), whichever is
/// looked up first.
#[tokio::test]
async fn retired_versions_sharing_an_artefact_keep_their_own_manifests() {
    let (_tmp, models) = models_folder();
    stage_version(&models, "1.1.1");
    let server = TestServer::start_with(config(&models)).await;
    let mut decided = Vec::new();
    for version in ["1.1.0", "1.1.1"] {
        let mut request = caravan_request();
        request.subject_id = format!("retiree-{version}");
        request.model = model_ref(MODEL, version);
        decided.push((version, server.score_one(request).await.decision_id));
    }
    set_rollout(&server, "1.0.0", "", 0.0, &[]).await.unwrap();
    for (version, _) in &decided {
        admin(&server)
            .await
            .unload_model(pb::ModelVersionRequest {
                model: MODEL.into(),
                version: (*version).into(),
            })
            .await
            .unwrap();
    }
    let mut why =
        pb::explanation_service_client::ExplanationServiceClient::new(server.channel().await);
    for (version, decision_id) in &decided {
        let answer = why
            .get_explanation(pb::GetExplanationRequest {
                decision_id: decision_id.clone(),
                audience: pb::Audience::Support as i32,
                language: "en".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let Some(pb::get_explanation_response::View::Support(view)) = answer.view else {
            panic!("{answer:?}");
        };
        assert!(
            view.model_card
                .starts_with(&format!("## {MODEL} {version}\n")),
            "{version}: {}",
            view.model_card
        );
    }
    server.stop().await;
}

/// A restart with a production version that no longer loads does not put
/// another version into production: requests that name no version are
/// refused, naming the rollout, until the rollout names a loaded version;
/// pinned requests are served throughout.
#[tokio::test]
async fn a_production_version_that_does_not_load_is_not_replaced() {
    let (_tmp, models) = models_folder();
    std::fs::write(
        models.join(MODEL).join("rollout.toml"),
        "production = \"1.1.0\"\n",
    )
    .unwrap();
    std::fs::write(models.join(MODEL).join("1.1.0/model.onnx"), b"truncated").unwrap();
    let server = TestServer::start_with(config(&models)).await;
    let mut scoring = server.scoring().await;
    for version in ["", "production"] {
        let refused = scoring
            .score(pb::ScoreRequest {
                model: model_ref(MODEL, version),
                ..caravan_request()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        for named in ["model.version", "1.1.0", "rollout.toml", "(1.0.0)"] {
            assert!(refused.message().contains(named), "{named}: {refused:?}");
        }
    }
    let pinned = scoring
        .score(pb::ScoreRequest {
            model: model_ref(MODEL, "1.0.0"),
            ..caravan_request()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pinned.decision.unwrap().model.unwrap().version, "1.0.0");
    let rollout = rollout_now(&server).await;
    assert_eq!(
        (rollout.production.as_str(), rollout.loaded.as_slice()),
        ("1.1.0", ["1.0.0".to_owned()].as_slice())
    );
    assert!(
        rollout
            .file_problem
            .contains("production 1.1.0 is not loaded; requests that name no version are refused"),
        "{rollout:?}"
    );

    set_rollout(&server, "1.0.0", "", 0.0, &[]).await.unwrap();
    let served = scoring.score(caravan_request()).await.unwrap().into_inner();
    assert_eq!(served.decision.unwrap().model.unwrap().version, "1.0.0");

    // A hand-edited file naming versions that are not loaded: GetRollout
    // shows the rollout in effect, and what of the file is not.
    std::fs::write(
        models.join(MODEL).join("rollout.toml"),
        "production = \"7.0.0\"\n[canary]\nversion = \"9.0.0\"\npercent = 10.0\n",
    )
    .unwrap();
    let rollout = rollout_now(&server).await;
    assert_eq!(rollout.production, "1.0.0");
    for said in [
        "production 7.0.0 is not loaded, so production stays 1.0.0",
        "canary 9.0.0 is not loaded; it takes its 10% of subjects once it loads",
    ] {
        assert!(rollout.file_problem.contains(said), "{said}: {rollout:?}");
    }

    // A rollout file that no longer reads leaves the rollout in effect,
    // and GetRollout shows that rollout and why the file does not read.
    std::fs::write(models.join(MODEL).join("rollout.toml"), "production = [").unwrap();
    let rollout = rollout_now(&server).await;
    assert_eq!(rollout.production, "1.0.0");
    assert!(rollout.file_problem.contains("rollout.toml"), "{rollout:?}");
    server.stop().await;
}

/// A version that arrives while serving is staged, not promoted, even
/// where the manifests mark no default (the highest would otherwise take
/// production): the production in effect is written to `rollout.toml`, so
/// a restart keeps it too, until `SetRollout` promotes the new one.
#[tokio::test]
async fn a_new_version_is_staged_not_promoted() {
    let (_tmp, models) = models_folder();
    let manifest = models.join(MODEL).join("1.0.0/manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replacen("default = true\n", "", 1)).unwrap();
    let unwatched = Config {
        watch_models: false,
        ..config(&models)
    };
    let server = TestServer::start_with(unwatched).await;
    let mut scoring = server.scoring().await;
    let mut served = async || {
        scoring
            .score(caravan_request())
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap()
            .model
            .unwrap()
            .version
    };
    assert_eq!(served().await, "1.1.0");
    stage_version(&models, "1.2.0");
    admin(&server)
        .await
        .reload_models(pb::ReloadModelsRequest {})
        .await
        .unwrap();
    assert!(loaded_versions(&server).await.contains("1.2.0"));
    assert_eq!(served().await, "1.1.0");
    let file = std::fs::read_to_string(models.join(MODEL).join("rollout.toml")).unwrap();
    assert!(file.contains("production = \"1.1.0\""), "{file}");

    set_rollout(&server, "1.2.0", "", 0.0, &[]).await.unwrap();
    assert_eq!(served().await, "1.2.0");
    server.stop().await;
}
