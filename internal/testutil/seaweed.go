package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// WeedVersion is the SeaweedFS module version whose `weed` binary the S3
// tests run. scripts/setup-test.sh reads it from here (one place to bump): it
// is the only version the Go module proxy resolves for the module, whose
// go.mod has replace directives, so `go install …@version` refuses it and
// setup-test.sh builds it from the module cache instead.
const WeedVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// S3Bucket is the bucket StartS3 creates.
const S3Bucket = "gradient-test"

// WeedBinary is where scripts/setup-test.sh installs weed:
// $GRADIENT_WEED when set, else $(go env GOPATH)/bin/weed-<WeedVersion>.
func WeedBinary() string {
	if p := os.Getenv("GRADIENT_WEED"); p != "" {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	gopath, _, _ = strings.Cut(gopath, string(os.PathListSeparator))
	return filepath.Join(gopath, "bin", "weed-"+WeedVersion)
}

// StartS3 runs a real S3-compatible server for the test: SeaweedFS's
// `weed server -s3` (master, volume server, filer and S3 gateway in one
// process) on free loopback ports, its data in t.TempDir(), with one
// identity whose keys are drawn for the test. It returns once the server
// has stored and read back an object in bucket S3Bucket, which it creates.
// The server is stopped (its whole process group) when the test ends, and
// its log is printed when the test failed.
//
// A missing binary fails the test (it is not skipped): run
// scripts/setup-test.sh (make test runs it), which builds it.
func StartS3(t testing.TB) (endpoint, accessKey, secretKey, bucket string) {
	t.Helper()
	bin := WeedBinary()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("SeaweedFS weed %s not found at %s: run scripts/setup-test.sh (make test runs it), which builds it (or set GRADIENT_WEED): %v",
			WeedVersion, bin, err)
	}
	dir := t.TempDir()
	accessKey, secretKey = "gradient"+randHex(t, 6), randHex(t, 20)
	cfg := map[string]any{"identities": []map[string]any{{
		"name":        "gradient",
		"credentials": []map[string]string{{"accessKey": accessKey, "secretKey": secretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	s3json := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(s3json, b, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}

	// Every listener on its own free port (the gRPC ones too: weed's
	// default, port+10000, may fall in the kernel's ephemeral range).
	port := func() int { return FreePort(t, "tcp") }
	master, volume, filer, s3 := port(), port(), port(), port()
	grpc := []int{port(), port(), port(), port()}
	args := []string{
		"-logtostderr", "-v=0",
		"server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-dir=" + data,
		fmt.Sprintf("-master.port=%d", master), fmt.Sprintf("-master.port.grpc=%d", grpc[0]),
		"-master.volumeSizeLimitMB=64", "-master.telemetry=false",
		fmt.Sprintf("-volume.port=%d", volume), fmt.Sprintf("-volume.port.grpc=%d", grpc[1]),
		"-volume.max=16", "-volume.preStopSeconds=0",
		"-filer", fmt.Sprintf("-filer.port=%d", filer), fmt.Sprintf("-filer.port.grpc=%d", grpc[2]),
		"-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
		"-s3", fmt.Sprintf("-s3.port=%d", s3), fmt.Sprintf("-s3.port.grpc=%d", grpc[3]),
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		"-s3.localSocket=" + filepath.Join(dir, "s3.sock"),
		"-s3.config=" + s3json,
	}
	log := &LogBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so that cleanup stops whatever it forks.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	// exited is closed when weed has exited, with waitErr set: both the
	// readiness wait and the cleanup watch it.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// Killed outright: its data is thrown away, and a graceful stop
		// takes seconds.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		// weed registers its gRPC sockets under /tmp by port.
		for _, p := range grpc {
			if m, _ := filepath.Glob(fmt.Sprintf("/tmp/seaweedfs-*-grpc-%d.sock", p)); m != nil {
				for _, f := range m {
					os.Remove(f)
				}
			}
		}
		if t.Failed() {
			t.Logf("weed server -s3 log:\n%s", tail(log.String(), 8000))
		}
	})

	endpoint = fmt.Sprintf("127.0.0.1:%d", s3)
	start := time.Now()
	if err := waitS3(endpoint, accessKey, secretKey, exited, &waitErr, 90*time.Second); err != nil {
		t.Fatalf("weed server -s3 at %s not ready: %v\nlog:\n%s", endpoint, err, tail(log.String(), 8000))
	}
	t.Logf("weed server -s3 at %s ready in %s", endpoint, time.Since(start).Round(time.Millisecond))
	return endpoint, accessKey, secretKey, S3Bucket
}

// waitS3 creates the bucket and round-trips an object through it: the S3
// gateway answers before the filer and the volume server are ready, so an
// answer alone does not mean a chunk can be stored. (The first write waits
// some 9 s inside weed: a new master defers volume ids for ~5 s, and the
// filer's lock ring forms a few seconds later.)
func waitS3(endpoint, accessKey, secretKey string, exited <-chan struct{}, waitErr *error, within time.Duration) error {
	c, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4(accessKey, secretKey, ""), MaxRetries: 1})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(within)
	probe := []byte("gradient readiness probe")
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("weed exited: %v", *waitErr)
		default:
		}
		last = func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.MakeBucket(ctx, S3Bucket, minio.MakeBucketOptions{}); err != nil {
				resp := minio.ToErrorResponse(err)
				if resp.Code != "BucketAlreadyOwnedByYou" && resp.Code != "BucketAlreadyExists" {
					return fmt.Errorf("make bucket: %w", err)
				}
			}
			if _, err := c.PutObject(ctx, S3Bucket, ".probe", bytes.NewReader(probe), int64(len(probe)), minio.PutObjectOptions{}); err != nil {
				return fmt.Errorf("put probe: %w", err)
			}
			obj, err := c.GetObject(ctx, S3Bucket, ".probe", minio.GetObjectOptions{})
			if err != nil {
				return fmt.Errorf("get probe: %w", err)
			}
			defer obj.Close()
			var got bytes.Buffer
			if _, err := got.ReadFrom(obj); err != nil {
				return fmt.Errorf("read probe: %w", err)
			}
			if !bytes.Equal(got.Bytes(), probe) {
				return errors.New("probe read back different bytes")
			}
			return c.RemoveObject(ctx, S3Bucket, ".probe", minio.RemoveObjectOptions{})
		}()
		if last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("after %v: %w", within, last)
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
