// Package vod is Gradient's on-demand side: titles (uploaded files, and
// media recorded as it arrives through a Recording) packaged once into
// fMP4 HLS whose chunks are content-addressed, a catalog of them, and the
// HTTP that serves them.
//
// A chunk (a segment or an init section) is stored once under the SHA-256
// of its bytes (ChunkStore); a title's Manifest lists, per rendition, each
// chunk's digest, size and media time, so any node can verify what it
// fetched and any cache can keep a chunk forever. The Catalog (SQLite in
// the data folder) is the truth for the titles packaged here, and holds a
// copy of the entries of the other nodes' titles (cluster.go): every node
// lists every title of the cluster, and a removal anywhere is final.
//
// Every node of a cluster caches the chunks of the other nodes' titles
// (cluster_chunks.go), and fills that cache ahead of its viewers by
// popularity (fill.go, after CalVoD): each cache should hold the bytes
// whose expected request rate at that cache is highest, which maximises
// its expected hit bytes. Viewers watch prefixes (they drop off as a title
// goes on), so every view reads a title's first minutes, and the expected
// hits per byte of a prefix are the title's expected view rate at the
// node. The planner scores each ready remote title as ½ × its share of the
// node's own views (decayed, half-life 10 min) + ½ × its share of the
// cluster's views (reported to the origin and gossiped with the title's
// entry), and fills the first vod.fill_prefix of the best titles' lowest
// rendition (then highest) within vod.fill_cache_share of the cache, paced
// at vod.fill_mbps. A title no one viewed scores 0 and is never filled;
// pinned replicas are in the store, which the cache's evictions never
// touch.
//
// The cache (DiskCache, cache.go) is W-TinyLFU, byte-weighted, with its
// window and admission done here and otter as the main segment: a new
// chunk enters a recency window of max(1 % of vod.cache_size, 4 average
// chunks) (at most a quarter of it), so that a cache of a few dozen chunks
// still gives a chunk time to be read by a second viewer; a chunk the
// window pushes out enters otter only if this cache's TinyLFU count-min
// sketch (cache_sketch.go: reads of held chunks and Puts, aged by halving)
// says it was requested more often than each of otter's coldest entries
// it would displace, which leave. Otter never evicts on its own (its
// bound is above the main segment's); its segmented LRU orders the
// victims. Otter alone (its window is a fixed 1 %, smaller than one chunk
// in a small cache) dropped nearly every new chunk before it was read
// again; at production sizes the two behave alike.
//
// In a cluster the caches are one cache partitioned by rendezvous owner: a
// node keeps a chunk it fetched for its own viewers only if it is one of
// the chunk's vod.replicas filling owners, or was asked to fill it by a
// peer, or prefetched it, or once the chunk is hot there (DiskCache.Admits:
// 8 recent requests, then the duel). A copy a non-owner keeps is bytes
// taken from the cluster's cache; one near the viewer pays only for the
// hottest chunks.
//
// vod knows nothing of live streams: a Recording takes H.264 access units
// and audio frames in its own terms; the node reads a stream from the hub
// and writes them.
package vod
