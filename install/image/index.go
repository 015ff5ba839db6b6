package image

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations on the index.json entry of an archive written by WriteIndex.
// containerd's importer (`ctr images import`) names the image after
// AnnotationImageName and takes it as is; it would prefix or drop a full
// reference found only in the OCI ref.name annotation, which by the image
// layout spec holds just the tag.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// Index builds one image per spec, all for the same Ref and each for its
// own Arch, and puts them into an OCI image index with their platforms.
func Index(specs ...Spec) (v1.ImageIndex, error) {
	if len(specs) == 0 {
		return nil, errors.New("image index: no images")
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	seen := map[string]bool{}
	for _, s := range specs {
		if s.Ref != specs[0].Ref {
			return nil, fmt.Errorf("image index %s: holds %s too; one index is one reference", specs[0].Ref, s.Ref)
		}
		arch := s.arch()
		if seen[arch] {
			return nil, fmt.Errorf("image index %s: two images for %s", s.Ref, arch)
		}
		seen[arch] = true
		img, err := Build(s)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	return idx, nil
}

// WriteIndex builds the images of specs (see Index) and writes them to path
// as an OCI image layout in a tar archive: the format `ctr images import`
// reads for multi-platform images. containerd imports the variant of its
// own platform unless told --all-platforms.
func WriteIndex(path string, specs ...Spec) error {
	idx, err := Index(specs...)
	if err != nil {
		return err
	}
	tag, err := ParseRef(specs[0].Ref)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = writeLayoutTar(tmp, idx, map[string]string{
		AnnotationImageName: tag.String(),
		AnnotationRefName:   tag.TagStr(),
	})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644) // CreateTemp's 0600 would keep others from importing it
	}
	if err != nil {
		return fmt.Errorf("image %s: write %s: %w", specs[0].Ref, path, err)
	}
	// A tarball half written by an interrupted build must not be imported.
	return os.Rename(tmp.Name(), path)
}

// writeLayoutTar writes idx as an OCI image layout (oci-layout, index.json,
// blobs/sha256/...) into a tar stream with fixed times and owners, so one
// build's tarball is byte for byte the next one's.
func writeLayoutTar(w io.Writer, idx v1.ImageIndex, annotations map[string]string) error {
	tw := tar.NewWriter(w)
	file := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)),
			ModTime: time.Unix(0, 0), Format: tar.FormatPAX,
		}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	written := map[v1.Hash]bool{}
	blob := func(h v1.Hash, data []byte) error {
		if written[h] {
			return nil
		}
		written[h] = true
		return file(path.Join("blobs", h.Algorithm, h.Hex), data)
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "blobs/sha256/", Mode: 0o755, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return err
		}
		if err := writeImageBlobs(img, blob); err != nil {
			return err
		}
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	if err := blob(digest, raw); err != nil {
		return err
	}
	mt, err := idx.MediaType()
	if err != nil {
		return err
	}
	top, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mt, Size: int64(len(raw)), Digest: digest, Annotations: annotations,
		}},
	})
	if err != nil {
		return err
	}
	if err := file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := file("index.json", top); err != nil {
		return err
	}
	return tw.Close()
}

// writeImageBlobs passes the layers, config and manifest of img to blob.
func writeImageBlobs(img v1.Image, blob func(v1.Hash, []byte) error) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		if err := blob(h, data); err != nil {
			return err
		}
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := blob(cfgName, cfg); err != nil {
		return err
	}
	h, err := img.Digest()
	if err != nil {
		return err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	return blob(h, raw)
}

// ReadIndex reads an archive written by WriteIndex: the image index and the
// annotations of its index.json entry. It unpacks the archive under dir,
// which must outlive the use of the index (blobs are read lazily).
func ReadIndex(archive, dir string) (v1.ImageIndex, map[string]string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", archive, err)
		}
		name := path.Clean(hdr.Name)
		if !filepath.IsLocal(name) {
			return nil, nil, fmt.Errorf("read %s: entry %q leaves the archive", archive, hdr.Name)
		}
		p := filepath.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				var data []byte
				if data, err = io.ReadAll(tr); err == nil {
					err = os.WriteFile(p, data, 0o644)
				}
			}
		default:
			err = fmt.Errorf("entry %s has type %q; an image layout holds files and directories", hdr.Name, hdr.Typeflag)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", archive, err)
		}
	}
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", archive, err)
	}
	im, err := root.IndexManifest()
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", archive, err)
	}
	if len(im.Manifests) != 1 {
		return nil, nil, fmt.Errorf("read %s: index.json lists %d manifests, want the one image index", archive, len(im.Manifests))
	}
	idx, err := root.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", archive, err)
	}
	return idx, im.Manifests[0].Annotations, nil
}

// Platforms returns the architectures of the images in idx, in order, and
// each image by architecture.
func Platforms(idx v1.ImageIndex) ([]string, map[string]v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	var archs []string
	imgs := map[string]v1.Image{}
	for _, d := range im.Manifests {
		if d.Platform == nil {
			return nil, nil, fmt.Errorf("index entry %s has no platform", d.Digest)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, nil, err
		}
		archs = append(archs, d.Platform.Architecture)
		imgs[d.Platform.Architecture] = img
	}
	return archs, imgs, nil
}
