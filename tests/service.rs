//! Health, reflection and the model service, as generic tools see them.

mod common;

use candor::grpc::pb;
use common::*;
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, ServerReflectionResponse,
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

async fn health(server: &TestServer, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(server.channel().await);
    let response = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(response.status).unwrap()
}

#[tokio::test]
async fn health_is_not_serving_until_the_models_load() {
    let server = TestServer::start_unloaded(test_config()).await;
    for service in ["", "candor.v1.ScoringService", "candor.v1.ModelService"] {
        assert_eq!(
            health(&server, service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    server.gateway.load_models().await.unwrap();
    // The health reporter follows readiness through a watch channel.
    let mut status = health(&server, "").await;
    for _ in 0..100 {
        if status == ServingStatus::Serving {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        status = health(&server, "").await;
    }
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(
        health(&server, "candor.v1.ScoringService").await,
        ServingStatus::Serving
    );
    server.stop().await;
}

/// Reads a Watch until it says SERVING: the reporter follows the models'
/// loading a moment after `load_models` returns.
async fn serving_told(watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>) {
    loop {
        let told = watch.next().await.unwrap().unwrap();
        if told.status() == ServingStatus::Serving {
            return;
        }
    }
}

/// A stop turns health NOT_SERVING first, telling open Watch streams, and
/// keeps serving through `shutdown_grace_secs`, so that a load balancer
/// moves traffic away before connections are refused; a second signal
/// (`end_grace`) ends the grace.
#[tokio::test]
async fn a_stop_reports_not_serving_and_serves_through_its_grace() {
    let server = TestServer::start_with(candor::config::Config {
        shutdown_grace_secs: 600,
        ..test_config()
    })
    .await;
    let gateway = server.gateway.clone();
    let channel = server.channel().await;
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: "candor.v1.ScoringService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    serving_told(&mut watch).await;
    let url = server.url();
    let stopping = tokio::spawn(server.stop());

    let told = watch.next().await.unwrap().unwrap();
    assert_eq!(told.status(), ServingStatus::NotServing);
    for service in ["", "candor.v1.ScoringService", "candor.v1.ModelService"] {
        let status = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.status(), ServingStatus::NotServing, "{service:?}");
    }
    // Calls on open connections and new connections are still served.
    let mut scoring = pb::scoring_service_client::ScoringServiceClient::new(channel);
    scoring.score(caravan_request()).await.unwrap();
    let fresh = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .expect("a new connection is accepted during the grace");
    pb::scoring_service_client::ScoringServiceClient::new(fresh)
        .score(caravan_request())
        .await
        .unwrap();
    assert!(!stopping.is_finished(), "the grace is not over yet");

    gateway.end_grace();
    tokio::time::timeout(std::time::Duration::from_secs(30), stopping)
        .await
        .expect("the server stops once the grace is ended")
        .unwrap();
    let ended = watch.next().await.unwrap().unwrap_err();
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
}

/// A stop that begins while the models load is not undone by their
/// loading: health stays NOT_SERVING.
#[tokio::test]
async fn a_stop_during_loading_stays_a_stop() {
    let server = TestServer::start_unloaded(test_config()).await;
    server.gateway.drain();
    server.gateway.load_models().await.unwrap();
    assert_eq!(
        *server.gateway.readiness().borrow(),
        candor::gateway::Readiness::Draining
    );
    assert_eq!(health(&server, "").await, ServingStatus::NotServing);
    server.stop().await;
}

/// Without a grace, a Watch still hears NOT_SERVING before its stream ends.
#[tokio::test]
async fn a_watch_hears_not_serving_before_a_stop_without_grace() {
    let server = TestServer::start().await;
    let mut watch = HealthClient::new(server.channel().await)
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    serving_told(&mut watch).await;
    server.stop().await;
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    let ended = watch.next().await.unwrap().unwrap_err();
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
}

/// As the health specification has it: Check of a service the server does
/// not know is NOT_FOUND, and Watch of one answers SERVICE_UNKNOWN and stays
/// open, where a known service's Watch streams its status.
#[tokio::test]
async fn watching_an_unknown_service_answers_service_unknown_and_stays_open() {
    let server = TestServer::start().await;
    let mut client = HealthClient::new(server.channel().await);
    let unknown = HealthCheckRequest {
        service: "candor.v1.NoSuchService".into(),
    };
    let status = client.check(unknown.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let mut watch = client.watch(unknown).await.unwrap().into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::ServiceUnknown);
    let next = tokio::time::timeout(std::time::Duration::from_millis(300), watch.next()).await;
    assert!(next.is_err(), "the call stays open: {next:?}");
    drop(watch);

    let mut known = client
        .watch(HealthCheckRequest {
            service: "candor.v1.ScoringService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = known.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    drop(known);
    server.stop().await;
}

/// Older reflection clients speak only v1alpha; a method the gateway does
/// not have is UNIMPLEMENTED, not an authorization failure.
#[tokio::test]
async fn v1alpha_reflection_answers_and_unknown_methods_are_unimplemented() {
    use tonic_reflection::pb::v1alpha as alpha;
    let server = TestServer::start().await;
    let mut client =
        alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = stream.next().await.unwrap().unwrap();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected {response:?}")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "candor.v1.ScoringService")
    );

    let status = common::call_a_missing_method(server.channel().await).await;
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("/candor.v1.ScoringService/Nope"));
}

/// Opens a reflection stream, whose requests the returned sender sends.
async fn reflection_stream(
    server: &TestServer,
) -> (
    tokio::sync::mpsc::Sender<ServerReflectionRequest>,
    tonic::Streaming<tonic_reflection::pb::v1::ServerReflectionResponse>,
) {
    let mut client = ServerReflectionClient::new(server.channel().await);
    let (ask, questions) = tokio::sync::mpsc::channel(2);
    let stream = client
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(questions))
        .await
        .unwrap()
        .into_inner();
    (ask, stream)
}

fn question(request: MessageRequest) -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }
}

/// Reflection answers each request on one stream the client keeps open,
/// as grpcurl, grpcui and Postman use it: listing the services, then
/// describing one, before the client closes its side.
#[tokio::test]
async fn reflection_lists_the_services() {
    let server = TestServer::start().await;
    let (ask, mut stream) = reflection_stream(&server).await;
    ask.send(question(MessageRequest::ListServices(String::new())))
        .await
        .unwrap();
    let response = stream.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected {response:?}")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "candor.v1.ExplainService",
        "candor.v1.ScoringService",
        "candor.v1.ModelService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        // A client that asked v1 learns v1alpha is there too.
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    // A file comes with what it imports, so that one answer builds its
    // types; a later answer on the stream leaves out what was sent.
    let mut files = async |symbol: &str| {
        ask.send(question(MessageRequest::FileContainingSymbol(
            symbol.into(),
        )))
        .await
        .unwrap();
        let response = stream.next().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("unexpected {response:?}")
        };
        files
            .file_descriptor_proto
            .iter()
            .map(|f| <prost_types::FileDescriptorProto as prost::Message>::decode(&f[..]).unwrap())
            .collect::<Vec<_>>()
    };
    let scoring = files("candor.v1.ScoringService").await;
    assert_eq!(scoring[0].name(), "candor/v1/scoring.proto");
    let pool =
        prost_reflect::DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet {
            file: scoring.clone(),
        })
        .expect("the answer holds every file it needs");
    assert!(pool.get_message_by_name("candor.v1.FeatureValue").is_some());
    let models = files("candor.v1.ModelService").await;
    assert_eq!(models[0].name(), "candor/v1/models.proto");
    for again in &models[1..] {
        assert!(
            scoring.iter().all(|f| f.name() != again.name()),
            "{} sent twice",
            again.name()
        );
    }
    drop(ask);
    assert!(stream.next().await.is_none());
    server.stop().await;
}

/// A lookup that fails is answered on the stream, which stays open for the
/// next request (the reflection protocol's `ErrorResponse`, as the C++, Go
/// and Java servers answer), in both versions of the protocol.
#[tokio::test]
async fn a_failed_lookup_is_answered_and_the_stream_goes_on() {
    use tonic_reflection::pb::v1alpha as alpha;
    let server = TestServer::start().await;
    let (ask, mut stream) = reflection_stream(&server).await;
    let mut answer = async |request: MessageRequest| {
        ask.send(question(request)).await.unwrap();
        stream.next().await.unwrap().unwrap()
    };
    let refusal = |response: ServerReflectionResponse| match response.message_response {
        Some(MessageResponse::ErrorResponse(error)) => error,
        _ => panic!("unexpected {response:?}"),
    };
    for missing in [
        MessageRequest::FileByFilename("nope.proto".into()),
        MessageRequest::FileContainingSymbol("candor.v1.Nope".into()),
        // A type that does not exist has no extension numbers to list.
        MessageRequest::AllExtensionNumbersOfType("candor.v1.Nope".into()),
    ] {
        let response = answer(missing.clone()).await;
        assert_eq!(
            response.original_request.as_ref().unwrap().message_request,
            Some(missing)
        );
        let error = refusal(response);
        assert_eq!(error.error_code, tonic::Code::NotFound as i32, "{error:?}");
        assert!(error.error_message.contains("Nope") || error.error_message.contains("nope"));
    }
    // A long name is echoed in the request, not quoted whole again.
    let long = format!("candor.v1.{}", "N".repeat(100_000));
    let error = refusal(answer(MessageRequest::FileContainingSymbol(long)).await);
    assert!(
        error.error_message.len() < 1024,
        "{}",
        error.error_message.len()
    );
    // A type's extension numbers (none here) name the type.
    let response = answer(MessageRequest::AllExtensionNumbersOfType(
        "candor.v1.ScoreRequest".into(),
    ))
    .await;
    let Some(MessageResponse::AllExtensionNumbersResponse(numbers)) = response.message_response
    else {
        panic!("unexpected {response:?}")
    };
    assert_eq!(numbers.base_type_name, "candor.v1.ScoreRequest");
    assert!(numbers.extension_number.is_empty());
    let response = answer(MessageRequest::ListServices(String::new())).await;
    assert!(
        matches!(
            response.message_response,
            Some(MessageResponse::ListServicesResponse(_))
        ),
        "{response:?}"
    );

    let mut client =
        alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let ask = |request| alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([
            ask(
                alpha::server_reflection_request::MessageRequest::FileByFilename(
                    "nope.proto".into(),
                ),
            ),
            ask(alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
        ]))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert!(
        matches!(
            first.message_response,
            Some(alpha::server_reflection_response::MessageResponse::ErrorResponse(_))
        ),
        "{first:?}"
    );
    let second = stream.next().await.unwrap().unwrap();
    assert!(
        matches!(
            second.message_response,
            Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(_))
        ),
        "{second:?}"
    );
    assert!(stream.next().await.is_none());
    server.stop().await;
}

/// A reflection stream has no end of its own (grpcui and IDE plugins keep
/// one open): shutdown ends it, saying why, rather than wait for the client.
#[tokio::test]
async fn an_open_reflection_stream_ends_at_shutdown() {
    let server = TestServer::start().await;
    let (ask, mut stream) = reflection_stream(&server).await;
    ask.send(question(MessageRequest::ListServices(String::new())))
        .await
        .unwrap();
    stream.next().await.unwrap().unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), server.stop())
        .await
        .expect("shutdown ends the open reflection stream");
    let ended = stream.next().await.unwrap().unwrap_err();
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    drop(ask);
}

#[tokio::test]
async fn list_and_describe_models() {
    let server = TestServer::start().await;
    let mut client = server.models().await;
    let list = client
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["caravan-lgbm", "caravan-logreg", "caravan-mlp"]);
    let lgbm = &list.models[0];
    assert_eq!(lgbm.default_version, "1.0.0");
    let packaged = std::fs::read_dir(repo_root().join("models/caravan-lgbm"))
        .unwrap()
        .count();
    assert_eq!(
        lgbm.versions.len(),
        packaged,
        "every bundled version is served"
    );
    assert_eq!(lgbm.versions.iter().filter(|v| v.is_default).count(), 1);

    let described = client
        .describe_model(pb::DescribeModelRequest {
            model: model_ref("caravan-lgbm", ""),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(described.is_default);
    assert_eq!(described.identity.as_ref().unwrap().version, "1.0.0");
    assert_eq!(described.purposes, ["personalised_advertising"]);
    assert_eq!(described.features.len(), 78);
    assert!(
        described
            .features
            .iter()
            .enumerate()
            .all(|(i, f)| f.position as usize == i)
    );
    assert!(
        described.features.iter().all(|f| !f.special_category),
        "bundled targeting models use no special categories"
    );
    let income = described
        .features
        .iter()
        .find(|f| f.name == "MINKGEM")
        .unwrap();
    assert_eq!(income.data_category, "income");
    assert_eq!(income.source, "zip_code_aggregate");
    let auc = described
        .metrics
        .iter()
        .find(|m| m.name == "roc_auc")
        .unwrap();
    assert!(auc.value > 0.6 && auc.value < 1.0);
    let training = described.training.unwrap();
    assert!(training.excluded_columns.contains(&"MGODRK".to_owned()));
    let on_disk =
        std::fs::read_to_string(repo_root().join("models/caravan-lgbm/1.0.0/manifest.toml"))
            .unwrap();
    assert_eq!(described.manifest_toml, on_disk);
    assert_eq!(described.explanation_method, "tree_shap_path_dependent");
    let fairness = described.fairness.as_ref().unwrap();
    assert_eq!(fairness.rows, 1165);
    let columns: Vec<&str> = fairness
        .attributes
        .iter()
        .map(|a| a.column.as_str())
        .collect();
    assert_eq!(columns, ["age_band", "income_band"]);
    let income = &fairness.attributes[1];
    assert_eq!(income.bands, "MINKGEM");
    assert!(!income.meets_four_fifths_rule);
    assert_eq!(income.groups.len(), 3);
    let card = &described.model_card_markdown;
    assert!(
        card.starts_with("# Model card: caravan-lgbm 1.0.0"),
        "{card}"
    );
    for section in [
        "## Intended use and purpose",
        "## Training data",
        "## Features",
        "## Metrics",
        "## Fairness",
        "## Explanation method",
        "## Owner",
    ] {
        assert!(card.contains(section), "{section} missing:\n{card}");
    }

    let candidate = client
        .describe_model(pb::DescribeModelRequest {
            model: model_ref("caravan-lgbm", "1.1.0"),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!candidate.is_default);
    let missing = client
        .describe_model(pb::DescribeModelRequest {
            model: model_ref("nope", ""),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server.stop().await;
}

/// Clients set to compress their calls with gzip are served on every
/// service, and large answers come back compressed to those that accept it.
#[tokio::test]
async fn gzip_compressed_calls_are_served() {
    use tonic::codec::CompressionEncoding::Gzip;
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let decision = pb::scoring_service_client::ScoringServiceClient::new(channel.clone())
        .send_compressed(Gzip)
        .accept_compressed(Gzip)
        .score(caravan_request())
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert!(decision.score.is_some());
    let described = pb::model_service_client::ModelServiceClient::new(channel)
        .send_compressed(Gzip)
        .accept_compressed(Gzip)
        .describe_model(pb::DescribeModelRequest {
            model: model_ref("caravan-lgbm", ""),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!described.model_card_markdown.is_empty());
    let health = HealthClient::new(server.channel().await)
        .send_compressed(Gzip)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    let mut reflection = ServerReflectionClient::new(server.channel().await).send_compressed(Gzip);
    let listed = reflection
        .server_reflection_info(tokio_stream::once(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        listed.message_response,
        Some(MessageResponse::ListServicesResponse(_))
    ));

    // A compressed request that inflates past the limit is refused as an
    // oversized one is, naming the setting.
    let mut huge = caravan_request();
    huge.subject_id = "a".repeat(server.gateway.config().max_message_bytes + 1);
    let status = pb::scoring_service_client::ScoringServiceClient::new(server.channel().await)
        .send_compressed(Gzip)
        .score(huge)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_message_bytes"), "{status:?}");

    // A message of the limit that does not compress is larger compressed,
    // and is still taken: the limit is on the message, not its encoding.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Padded {
        /// A field ListModelsRequest does not have, which proto3 ignores.
        #[prost(bytes = "vec", tag = "15")]
        pad: Vec<u8>,
    }
    let limit = server.gateway.config().max_message_bytes;
    let padded = |len: usize| Padded {
        pad: (0..len).map(|_| rand::random::<u8>()).collect(),
    };
    let whole = padded(limit - 5);
    assert_eq!(prost::Message::encoded_len(&whole), limit);
    let grpc = tonic::client::Grpc::new(server.channel().await).send_compressed(Gzip);
    let list = |message: Padded| {
        let mut grpc = grpc.clone();
        async move {
            grpc.ready().await.unwrap();
            grpc.unary::<_, pb::ListModelsResponse, _>(
                tonic::Request::new(message),
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/candor.v1.ModelService/ListModels",
                ),
                tonic_prost::ProstCodec::default(),
            )
            .await
        }
    };
    list(whole).await.unwrap();
    // One byte more is refused, however it is encoded: compressed, or
    // sent as it is on a call that announced gzip (flag 0).
    let over = list(padded(limit - 4)).await.unwrap_err();
    assert_eq!(over.code(), tonic::Code::ResourceExhausted, "{over:?}");
    assert!(over.message().contains("max_message_bytes"), "{over:?}");
    let plain = framed(&prost::Message::encode_to_vec(&padded(limit - 4)));
    let status = raw_call_with(
        &server,
        "/candor.v1.ModelService/ListModels",
        &[("grpc-encoding", "gzip")],
        http_body_util::Full::new(bytes::Bytes::from(plain)),
    )
    .await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    server.stop().await;
}

/// A client's mistakes in gRPC's framing of a compressed message are
/// INVALID_ARGUMENT, never INTERNAL (tonic's answer, which counts them as
/// the gateway's faults), but where the gRPC compression specification
/// asks for INTERNAL: a compressed flag on a call without an encoding.
/// Either way the message says it is the request's.
#[tokio::test]
async fn a_compressed_message_that_does_not_inflate_is_the_callers_mistake() {
    let server = TestServer::start().await;
    let send = |flag: u8, encoding: Option<&'static str>| {
        let server = &server;
        async move {
            let mut message = framed(b"this is not gzip");
            message[0] = flag;
            let headers: Vec<_> = encoding.map(|e| ("grpc-encoding", e)).into_iter().collect();
            raw_call_with(
                server,
                "/candor.v1.ScoringService/Score",
                &headers,
                http_body_util::Full::new(bytes::Bytes::from(message)),
            )
            .await
        }
    };
    for (flag, encoding, code, says) in [
        (
            1,
            Some("gzip"),
            tonic::Code::InvalidArgument,
            "does not decompress",
        ),
        (
            2,
            Some("gzip"),
            tonic::Code::InvalidArgument,
            "compressed flag",
        ),
        (
            1,
            None,
            tonic::Code::Internal,
            "grpc-encoding is absent or identity",
        ),
        (
            1,
            Some("identity"),
            tonic::Code::Internal,
            "grpc-encoding is absent or identity",
        ),
    ] {
        let status = send(flag, encoding).await;
        assert_eq!(status.code(), code, "{flag} {encoding:?}: {status:?}");
        assert!(status.message().starts_with("request: "), "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    server.stop().await;
}

/// A message whose prefix declares more than the limit is refused on its
/// prefix, while its client is still sending (or has stopped): not after
/// the receive timeout, as DEADLINE_EXCEEDED. A stream of requests
/// (reflection) is told RESOURCE_EXHAUSTED in its trailers too, not
/// tonic's OUT_OF_RANGE.
#[tokio::test]
async fn a_message_declared_too_large_is_refused_on_its_prefix() {
    let server = TestServer::start().await;
    let limit = server.gateway.config().max_message_bytes;
    for (path, flag, encoding) in [
        ("/candor.v1.ScoringService/Score", 0u8, None),
        ("/candor.v1.ScoringService/Score", 1, Some("gzip")),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            0,
            None,
        ),
    ] {
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
        >(1);
        let mut prefix = vec![flag];
        prefix.extend_from_slice(&u32::MAX.to_be_bytes());
        prefix.extend_from_slice(b"abc");
        tx.send(Ok(http_body::Frame::data(prefix.into())))
            .await
            .unwrap();
        let headers: Vec<_> = encoding.map(|e| ("grpc-encoding", e)).into_iter().collect();
        // The body stays open: `tx` lives until the answer is read.
        let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let status = raw_call_with(&server, path, &headers, body).await;
        drop(tx);
        assert_eq!(
            status.code(),
            tonic::Code::ResourceExhausted,
            "{path}: {status:?}"
        );
        assert!(
            status.message().contains(&format!("{limit} bytes")),
            "{path}: {status:?}"
        );
    }
    server.stop().await;
}

/// An answer that is one whole and larger than `max_message_bytes` is
/// refused naming it and the setting, not failed by the transport with
/// OUT_OF_RANGE (a model's description at the smallest limit allowed).
#[tokio::test]
async fn a_whole_answer_over_the_message_limit_names_it() {
    let mut config = test_config();
    config.max_message_bytes = 65_536;
    let server = TestServer::start_with(config).await;
    let refused = server
        .models()
        .await
        .describe_model(pb::DescribeModelRequest {
            model: model_ref("caravan-lgbm", "1.0.0"),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .starts_with("model: the description of caravan-lgbm 1.0.0 is "),
        "{refused:?}"
    );
    assert!(
        refused.message().contains("max_message_bytes"),
        "{refused:?}"
    );
    server.stop().await;
}
