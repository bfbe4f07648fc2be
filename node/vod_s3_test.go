package node

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/testutil"
	"github.com/gradient-cdn/gradient/vod"
)

// TestVoDS3OriginHoldsEveryTitleAndServesWhatNoNodeHolds: with vod.origin
// an S3 bucket (a real SeaweedFS), a title packaged at n0 is written to the
// bucket; once n0 is gone (and nothing was pinned: replicas 1), n1 still
// serves every chunk, read from the bucket.
func TestVoDS3OriginHoldsEveryTitleAndServesWhatNoNodeHolds(t *testing.T) {
	endpoint, ak, sk, bucket := testutil.StartS3(t)
	key := base64.StdEncoding.EncodeToString([]byte("vod-cluster-key!"))
	edit := func(c *Config) {
		c.VoD.Replicas = 1
		c.VoD.Origin = "s3://" + bucket + "/titles"
		c.VoD.S3.Endpoint, c.VoD.S3.AccessKey, c.VoD.S3.SecretKey, c.VoD.S3.UseTLS = endpoint, ak, sk, false
	}
	n0 := testOverlayNodeWith(t, "n0", key, nil, edit)
	n1 := testOverlayNodeWith(t, "n1", key, []string{n0.Config().Gossip.Addr}, edit)
	testutil.Eventually(t, 10*time.Second, "2 nodes alive", func() bool {
		return len(n0.Members.Alive()) == 2 && len(n1.Members.Alive()) == 2
	})
	clip := testutil.Clip(t, testutil.ClipOptions{Width: 320, Height: 240, FPS: 25, Seconds: 10, GOP: 25, Audio: "aac"})
	id := uploadReady(t, n0, clip, "Kept In The Bucket")
	t0, err := n0.VoD.Get(id)
	if err != nil || t0.Manifest == nil {
		t.Fatalf("the title at its origin: %v", err)
	}
	var ds []vod.Digest
	for _, rd := range t0.Manifest.Renditions {
		ds = append(ds, rd.Init.Digest)
		for _, c := range rd.Segments {
			ds = append(ds, c.Digest)
		}
	}
	s3cfg := n0.Config().VoD.S3
	s3cfg.Bucket, s3cfg.Prefix = bucket, "titles"
	bkt, err := vod.NewS3Origin(s3cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "every chunk of the title in the bucket", func() bool {
		for _, d := range ds {
			if ok, err := bkt.Has(context.Background(), d); err != nil || !ok {
				return false
			}
		}
		return true
	})
	testutil.Eventually(t, 10*time.Second, "n1 lists the title ready", func() bool {
		x, ok := listedTitle(t, n1, id)
		return ok && x.State == vod.StateReady
	})
	urls := chunkURLs(t, n1, id)
	n0.Close()
	testutil.Eventually(t, 10*time.Second, "n0 gone for n1", func() bool { return len(n1.Members.Alive()) == 1 })
	for _, u := range urls {
		if err := getChunk(t, n1, u); err != nil {
			t.Fatalf("n1 with the origin node gone: %v", err)
		}
	}
	if st := cacheStatus(t, n1); st.Fetch.UpstreamFetches["store"] == 0 {
		t.Fatalf("n1's chunks did not come from the bucket: %+v", st.Fetch)
	}
}
