// @segment/analytics-node against the server: node analytics_node.js <server-url> <write-key>
// (see common.js for the environment and the output).

'use strict'

const { config, guardFetch, emit, plan, sleep } = require('./common')

const cfg = config()
let errors = 0
let blocked = 0
guardFetch((href) => {
  blocked++
  console.error(`analytics-node tried to reach ${href}`)
})

const { Analytics } = require('@segment/analytics-node')

const analytics = new Analytics({
  writeKey: cfg.writeKey,
  host: cfg.url,
  flushAt: 20,
  flushInterval: 200,
  maxRetries: 10,
  httpRequestTimeout: 10000,
})
analytics.on('error', (err) => {
  errors++
  console.error('analytics-node error event:', err && err.code, err && err.reason && String(err.reason))
})

const sdk = 'node'
const p = plan(sdk, cfg.run)
const pending = []
let delivered = 0

/** Makes one call; resolves when its callback fired. */
function call(name, extra, invoke) {
  pending.push(
    new Promise((resolve) => {
      invoke((err, ctx) => {
        const messageId = ctx && ctx.event && ctx.event.messageId
        if (err) {
          errors++
          console.error(`analytics-node ${name} callback error:`, String(err))
        } else {
          delivered++
        }
        emit({ sdk, call: name, messageId, type: ctx && ctx.event && ctx.event.type, ok: !err, ...extra })
        resolve()
      })
    }),
  )
}

async function main() {
  const started = Date.now()
  const { userId, anonymousId } = p
  call('identify', { userId, anonymousId, traits: p.traits }, (cb) =>
    analytics.identify({ userId, anonymousId, traits: p.traits }, cb),
  )
  let seq = 0
  let s = ++seq
  call('track', { userId, event: 'Signed Up', seq: s }, (cb) =>
    analytics.track(
      { userId, anonymousId, event: 'Signed Up', properties: { plan: 'pro', source: 'sdk-test', sdk_seq: s } },
      cb,
    ),
  )
  s = ++seq
  call('order', { userId, event: 'Order Completed', seq: s, orderId: p.order.order_id, products: p.order.products.length }, (cb) =>
    analytics.track({ userId, event: 'Order Completed', properties: { ...p.order, sdk_seq: s } }, cb),
  )
  s = ++seq
  call('page', { userId, name: 'Home', seq: s }, (cb) =>
    analytics.page({ userId, category: 'Docs', name: 'Home', properties: { path: '/docs', title: 'Docs', sdk_seq: s } }, cb),
  )
  if (typeof analytics.screen === 'function') {
    s = ++seq
    call('screen', { userId, name: 'Dashboard', seq: s }, (cb) =>
      analytics.screen({ userId, name: 'Dashboard', properties: { variant: 'b', sdk_seq: s } }, cb),
    )
  } else {
    emit({ sdk, skipped: 'screen', why: 'this SDK version has no screen call' })
  }
  call('group', { userId, groupId: p.groupId, traits: p.groupTraits }, (cb) =>
    analytics.group({ userId, groupId: p.groupId, traits: p.groupTraits }, cb),
  )
  call('alias', { userId, previousId: p.aliasFrom }, (cb) =>
    analytics.alias({ userId, previousId: p.aliasFrom }, cb),
  )
  for (let i = 0; i < cfg.burst; i++) {
    const k = ++seq
    call('burst', { userId, n: i, seq: k }, (cb) =>
      analytics.track({ userId, event: 'Burst Event', properties: { n: i, sdk_seq: k } }, cb),
    )
    if (cfg.burstDelayMs > 0) await sleep(cfg.burstDelayMs)
  }
  const flushed = await Promise.race([
    analytics.closeAndFlush({ timeout: cfg.timeoutMs }).then(() => Promise.all(pending)).then(() => true),
    sleep(cfg.timeoutMs + 1000).then(() => false),
  ])
  const ok = flushed && errors === 0 && blocked === 0 && delivered === pending.length
  emit({ summary: true, sdk, ok, flushed, errors, blocked, calls: pending.length, delivered, ms: Date.now() - started })
  process.exit(ok ? 0 : 1)
}

main().catch((e) => {
  console.error('analytics-node script failed:', e)
  process.exit(1)
})
