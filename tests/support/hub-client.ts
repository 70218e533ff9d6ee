/** The hub client as the hub tests build it: settings for a loopback endpoint, and a client over them. */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { FetchHttpClient } from "@effect/platform"
import { Duration, Effect, Layer, Option } from "effect"
import { DEFAULT_MAX_TREE, Hub, type HubConfig, type HubError, type HubService, layerConfig } from "../../src/hub/index.ts"

/** Settings for `endpoint` and `cacheDir`: no token, quick retries, 10 s timeouts, unless `overrides` say otherwise. */
export const testHubConfig = (endpoint: string, cacheDir: string, overrides: Partial<HubConfig> = {}): HubConfig => ({
  endpoint,
  token: Option.none(),
  home: cacheDir,
  cacheDir,
  offline: false,
  requestTimeout: Duration.seconds(10),
  idleTimeout: Duration.seconds(10),
  retries: 3,
  retryBase: Duration.millis(1),
  maxTree: DEFAULT_MAX_TREE,
  ...overrides
})

export const withHub = <A>(config: HubConfig, use: (hub: HubService) => Effect.Effect<A, HubError>) =>
  Effect.flatMap(Hub, use).pipe(
    Effect.provide(layerConfig(config).pipe(Layer.provide(FetchHttpClient.layer), Layer.provide(NodeContext.layer)))
  )

export const failureOf = <A>(config: HubConfig, use: (hub: HubService) => Effect.Effect<A, HubError>) => Effect.flip(withHub(config, use))
