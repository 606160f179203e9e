//! Host-side bindings generated from `wit/receiver.wit` (world `belfry:receiver/receiver`).

wasmtime::component::bindgen!({
    world: "receiver",
    path: "../wit",
    imports: {
        // Only the `send`s wait on I/O; the log and clock imports answer at once.
        "belfry:receiver/http.send": async,
        "belfry:receiver/smtp.send": async,
    },
    exports: { default: async },
    // Notifications wait in the durable outbox until a channel accepts them.
    additional_derives: [serde::Serialize, serde::Deserialize],
});
