// @segment/analytics-next (the browser SDK, analytics.js 2.0) under jsdom in Node,
// against the server: node analytics_next.js <server-url> <write-key>
// (see common.js for the environment and the output).
//
// Offline by construction: the CDN settings are given inline (`cdnSettings`), so
// nothing is fetched from Segment's CDN; the Segment.io integration's `apiHost`
// points at the server over http; remote metrics are off (sampleRate 0); and
// fetch refuses anything but loopback (a refused request fails the run).

'use strict'

const { config, guardFetch, emit, plan, sleep } = require('./common')

const cfg = config()
let errors = 0
let blocked = 0

// The page the SDK runs in.
const { JSDOM } = require('jsdom')
const dom = new JSDOM('<!doctype html><html><head><title>SDK test page</title></head><body></body></html>', {
  url: 'https://shop.example.com/checkout?utm_source=sdk-test',
  referrer: 'https://www.example.org/',
  pretendToBeVisual: true,
})
const win = dom.window

// What the SDK's HTTP requests did, by messageId: delivered when a 2xx came back.
const deliveredIds = new Set()
const statuses = {}
const fetchGuarded = guardFetch((href) => {
  blocked++
  console.error(`analytics-next tried to reach ${href}`)
})
const observedFetch = async (input, init) => {
  const res = await fetchGuarded(input, init)
  statuses[res.status] = (statuses[res.status] || 0) + 1
  if (res.status >= 200 && res.status < 300 && init && typeof init.body === 'string') {
    try {
      const body = JSON.parse(init.body)
      for (const e of Array.isArray(body.batch) ? body.batch : [body]) {
        if (e && e.messageId) deliveredIds.add(e.messageId)
      }
    } catch {
      // not an event body
    }
  }
  return res
}
globalThis.fetch = observedFetch
win.fetch = observedFetch

// Browser globals the SDK reads.
const globals = {
  window: win,
  self: win,
  document: win.document,
  navigator: win.navigator,
  location: win.location,
  localStorage: win.localStorage,
  sessionStorage: win.sessionStorage,
  screen: win.screen,
  HTMLElement: win.HTMLElement,
  Element: win.Element,
  Node: win.Node,
  Event: win.Event,
  CustomEvent: win.CustomEvent,
}
for (const [k, v] of Object.entries(globals)) {
  Object.defineProperty(globalThis, k, { value: v, configurable: true, writable: true })
}

const { AnalyticsBrowser } = require('@segment/analytics-next')

const sdk = 'next'
const p = plan(sdk, cfg.run)
const apiHost = `${cfg.host}/v1`

async function main() {
  const started = Date.now()
  const analytics = AnalyticsBrowser.load(
    {
      writeKey: cfg.writeKey,
      // Never used (cdnSettings is given), but keep it off the internet anyway.
      cdnURL: cfg.url,
      cdnSettings: {
        integrations: {
          'Segment.io': { apiKey: cfg.writeKey, apiHost, protocol: 'http' },
        },
        plan: {},
        metrics: { sampleRate: 0 },
        remotePlugins: [],
        enabledMiddleware: {},
        legacyVideoPluginsEnabled: false,
      },
    },
    {
      integrations: { 'Segment.io': { apiHost, protocol: 'http' } },
      // Nothing persisted across runs in the jsdom page.
      disableClientPersistence: true,
    },
  )
  analytics.on('error', (err) => {
    errors++
    console.error('analytics-next error event:', err && err.code, err && err.reason && String(err.reason))
  })
  const [instance] = await analytics
  instance.setAnonymousId(p.anonymousId)

  const sent = []
  const record = async (name, extra, promise) => {
    const ctx = await promise
    const failed = ctx.failedDelivery && ctx.failedDelivery()
    if (failed) {
      errors++
      console.error(`analytics-next ${name} failed:`, String(failed.reason))
    }
    const line = { sdk, call: name, messageId: ctx.event.messageId, type: ctx.event.type, ok: !failed, ...extra }
    sent.push(line)
    emit(line)
  }
  const { userId, anonymousId } = p
  await record('identify', { userId, anonymousId, traits: p.traits }, analytics.identify(userId, p.traits))
  let seq = 0
  let s = ++seq
  await record(
    'track',
    { userId, event: 'Signed Up', seq: s },
    analytics.track('Signed Up', { plan: 'pro', source: 'sdk-test', sdk_seq: s }),
  )
  s = ++seq
  await record(
    'order',
    { userId, event: 'Order Completed', seq: s, orderId: p.order.order_id, products: p.order.products.length },
    analytics.track('Order Completed', { ...p.order, sdk_seq: s }),
  )
  s = ++seq
  await record('page', { userId, name: 'Home', seq: s }, analytics.page('Docs', 'Home', { path: '/docs', sdk_seq: s }))
  if (typeof instance.screen === 'function') {
    s = ++seq
    await record(
      'screen',
      { userId, name: 'Dashboard', seq: s },
      analytics.screen('Dashboard', { variant: 'b', sdk_seq: s }),
    )
  } else {
    emit({ sdk, skipped: 'screen', why: 'this SDK version has no screen call' })
  }
  await record('group', { userId, groupId: p.groupId, traits: p.groupTraits }, analytics.group(p.groupId, p.groupTraits))
  await record('alias', { userId, previousId: p.aliasFrom }, analytics.alias(userId, p.aliasFrom))
  const burst = []
  for (let i = 0; i < cfg.burst; i++) {
    const k = ++seq
    burst.push(record('burst', { userId, n: i, seq: k }, analytics.track('Burst Event', { n: i, sdk_seq: k })))
    if (cfg.burstDelayMs > 0) await sleep(cfg.burstDelayMs)
  }
  await Promise.all(burst)

  // analytics-next has no flush: an event whose request failed for now is
  // re-queued (and its promise already resolved). Wait until every event got a
  // 2xx answer, or an error event fired, or the timeout.
  const deadline = Date.now() + cfg.timeoutMs
  const undelivered = () => sent.filter((l) => !deliveredIds.has(l.messageId))
  while (undelivered().length > 0 && errors === 0 && Date.now() < deadline) {
    await sleep(20)
  }
  const left = undelivered()
  for (const l of left.slice(0, 5)) console.error('analytics-next: not delivered:', JSON.stringify(l))
  const ok = left.length === 0 && errors === 0 && blocked === 0
  emit({
    summary: true,
    sdk,
    ok,
    errors,
    blocked,
    calls: sent.length,
    delivered: sent.length - left.length,
    statuses,
    ms: Date.now() - started,
  })
  // jsdom's timers and the SDK's would keep the process alive.
  process.exit(ok ? 0 : 1)
}

main().catch((e) => {
  console.error('analytics-next script failed:', e)
  process.exit(1)
})
