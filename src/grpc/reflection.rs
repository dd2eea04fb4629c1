//! Server reflection (v1 and v1alpha) that answers every request on its
//! stream.
//!
//! The reflection protocol answers a lookup that fails (an unknown file or
//! symbol) with an `ErrorResponse` on the stream, which stays open for the
//! next request, as the C++, Go and Java servers do. tonic-reflection ends
//! the whole stream with a status instead: the requests after it go
//! unanswered, and Python's descriptor database over reflection raises a
//! broken stream where its pool expects a `KeyError`. Each request here is
//! put to tonic-reflection's service on a stream of its own, in process,
//! and a refusal becomes the `ErrorResponse` it should have been. A
//! question about a type's extension numbers is answered naming the type,
//! or NOT_FOUND for a type that does not exist (tonic-reflection answers
//! any name with an empty list of no type).

use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// The longest error message an answer carries.
const MAX_ERROR_MESSAGE: usize = 512;

macro_rules! answering_every_request {
    ($version:ident) => {
        pub mod $version {
            use super::*;
            use tonic_reflection::pb::$version::{
                ErrorResponse, ExtensionNumberResponse, ServerReflectionRequest,
                ServerReflectionResponse,
                server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
                server_reflection_server::{ServerReflection, ServerReflectionServer},
            };

            /// tonic-reflection's lookups, asked one request at a time.
            pub struct Reflection<S> {
                lookups: ServerReflectionServer<S>,
            }

            impl<S> Reflection<S> {
                pub fn new(lookups: ServerReflectionServer<S>) -> ServerReflectionServer<Self> {
                    ServerReflectionServer::new(Self { lookups })
                }
            }

            #[tonic::async_trait]
            impl<S: ServerReflection> ServerReflection for Reflection<S> {
                type ServerReflectionInfoStream =
                    ReceiverStream<Result<ServerReflectionResponse, Status>>;

                async fn server_reflection_info(
                    &self,
                    request: Request<Streaming<ServerReflectionRequest>>,
                ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
                    let mut requests = request.into_inner();
                    let mut lookups = ServerReflectionClient::new(self.lookups.clone());
                    let (answers, rx) = mpsc::channel(1);
                    tokio::spawn(async move {
                        while let Some(request) = requests.next().await {
                            let answer = match request {
                                Ok(request) => Ok(answer(&mut lookups, request).await),
                                // A message that does not decode ends the
                                // stream with its status.
                                Err(status) => Err(status),
                            };
                            let last = answer.is_err();
                            if answers.send(answer).await.is_err() || last {
                                return;
                            }
                        }
                    });
                    Ok(Response::new(ReceiverStream::new(rx)))
                }
            }

            type Lookups<S> = ServerReflectionClient<ServerReflectionServer<S>>;

            async fn answer<S: ServerReflection>(
                lookups: &mut Lookups<S>,
                request: ServerReflectionRequest,
            ) -> ServerReflectionResponse {
                let answer = |response| ServerReflectionResponse {
                    valid_host: request.host.clone(),
                    original_request: Some(request.clone()),
                    message_response: Some(response),
                };
                let refused = |status: Status| {
                    // The message quotes the name asked for, which the
                    // answer already echoes: quoted whole, a name near the
                    // message limit would take the answer past it.
                    let mut message = status.message().to_owned();
                    if message.len() > MAX_ERROR_MESSAGE {
                        let cut = message.floor_char_boundary(MAX_ERROR_MESSAGE);
                        message.truncate(cut);
                        message.push('…');
                    }
                    answer(MessageResponse::ErrorResponse(ErrorResponse {
                        error_code: status.code() as i32,
                        error_message: message,
                    }))
                };
                // tonic-reflection answers any name with no extensions and
                // no type; the type must exist, and is named in the answer.
                // (No message here declares extensions.)
                if let Some(MessageRequest::AllExtensionNumbersOfType(name)) =
                    &request.message_request
                {
                    let found = ServerReflectionRequest {
                        host: request.host.clone(),
                        message_request: Some(MessageRequest::FileContainingSymbol(name.clone())),
                    };
                    return match ask(lookups, found).await {
                        Ok(_) => answer(MessageResponse::AllExtensionNumbersResponse(
                            ExtensionNumberResponse {
                                base_type_name: name.clone(),
                                extension_number: Vec::new(),
                            },
                        )),
                        Err(status) => refused(status),
                    };
                }
                ask(lookups, request.clone()).await.unwrap_or_else(refused)
            }

            /// tonic-reflection's answer to `request`, or its refusal.
            async fn ask<S: ServerReflection>(
                lookups: &mut Lookups<S>,
                request: ServerReflectionRequest,
            ) -> Result<ServerReflectionResponse, Status> {
                lookups
                    .server_reflection_info(tokio_stream::once(request))
                    .await?
                    .into_inner()
                    .message()
                    .await?
                    .ok_or_else(|| Status::internal("the lookup gave no answer"))
            }
        }
    };
}

answering_every_request!(v1);
answering_every_request!(v1alpha);
