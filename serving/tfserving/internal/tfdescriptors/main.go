// Command tfdescriptors writes the descriptors of the TensorFlow protos
// that TF Serving's protos import, exactly as graft's generated Go
// packages register them, so that protoc compiles TF Serving's protos
// against those descriptors (--descriptor_set_in) rather than against
// .proto sources that could differ from graft's.
//
//	go run ./serving/tfserving/internal/tfdescriptors -out tf.pb -m mappings.txt
//
// The FileDescriptorSet written to -out holds the imported files and
// everything they import, dependencies first. The file written to -m has
// one line per file, "path=go-import-path", for protoc-gen-go's M options.
package main

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	_ "github.com/wamuir/graft/tensorflow/core/example/example_protos_go_proto"
	_ "github.com/wamuir/graft/tensorflow/core/framework/tensor_go_proto"
	_ "github.com/wamuir/graft/tensorflow/core/protobuf/for_core_protos_go_proto"
)

// roots are the TensorFlow files TF Serving's protos import.
var roots = []string{
	"tensorflow/core/example/example.proto",
	"tensorflow/core/framework/tensor.proto",
	"tensorflow/core/protobuf/config.proto",
	"tensorflow/core/protobuf/error_codes.proto",
	"tensorflow/core/protobuf/meta_graph.proto",
	"tensorflow/core/protobuf/named_tensor.proto",
}

// The TensorFlow protos' go_package points at TensorFlow's own Go
// bindings; graft ships the same packages under its module.
const (
	tfGoPrefix    = "github.com/tensorflow/tensorflow/tensorflow/go/"
	graftGoPrefix = "github.com/wamuir/graft/tensorflow/"
)

func main() {
	out := flag.String("out", "", "write the FileDescriptorSet here")
	mout := flag.String("m", "", "write the path=go-import-path mappings here")
	flag.Parse()
	if *out == "" || *mout == "" {
		fmt.Fprintln(os.Stderr, "usage: tfdescriptors -out FILE -m FILE")
		os.Exit(2)
	}
	if err := run(*out, *mout); err != nil {
		fmt.Fprintln(os.Stderr, "tfdescriptors:", err)
		os.Exit(1)
	}
}

func run(out, mout string) error {
	var (
		set   descriptorpb.FileDescriptorSet
		seen  = map[string]bool{}
		lines []string
		visit func(fd protoreflect.FileDescriptor) error
	)
	visit = func(fd protoreflect.FileDescriptor) error {
		if seen[fd.Path()] {
			return nil
		}
		seen[fd.Path()] = true
		imps := fd.Imports()
		for i := 0; i < imps.Len(); i++ {
			if err := visit(imps.Get(i).FileDescriptor); err != nil {
				return err
			}
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
		if strings.HasPrefix(fd.Path(), "google/protobuf/") {
			return nil // protoc-gen-go knows the well-known types
		}
		pkg, err := goPackage(fd)
		if err != nil {
			return err
		}
		lines = append(lines, fd.Path()+"="+pkg)
		return nil
	}
	for _, path := range roots {
		fd, err := protoregistry.GlobalFiles.FindFileByPath(path)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := visit(fd); err != nil {
			return err
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&set)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return err
	}
	sort.Strings(lines)
	return os.WriteFile(mout, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

// goPackage is the Go import path of the package graft generated for fd:
// that of the Go types of its messages or enums, or, for a file that
// declares none (one that only re-exports another by a public import),
// its go_package moved under graft's module.
func goPackage(fd protoreflect.FileDescriptor) (string, error) {
	var fromOption string
	if o, ok := fd.Options().(*descriptorpb.FileOptions); ok {
		if gp, _, _ := strings.Cut(o.GetGoPackage(), ";"); strings.HasPrefix(gp, tfGoPrefix) {
			fromOption = graftGoPrefix + strings.TrimPrefix(gp, tfGoPrefix)
		}
	}
	var fromTypes string
	if fd.Messages().Len() > 0 {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(fd.Messages().Get(0).FullName())
		if err != nil {
			return "", fmt.Errorf("%s: %w", fd.Path(), err)
		}
		fromTypes = reflect.TypeOf(mt.Zero().Interface()).Elem().PkgPath()
	} else if fd.Enums().Len() > 0 {
		et, err := protoregistry.GlobalTypes.FindEnumByName(fd.Enums().Get(0).FullName())
		if err != nil {
			return "", fmt.Errorf("%s: %w", fd.Path(), err)
		}
		fromTypes = reflect.TypeOf(et.New(0)).PkgPath()
	}
	switch {
	case fromTypes != "" && fromOption != "" && fromTypes != fromOption:
		return "", fmt.Errorf("%s: Go types in %s, but go_package says %s", fd.Path(), fromTypes, fromOption)
	case fromTypes != "":
		return fromTypes, nil
	case fromOption != "":
		return fromOption, nil
	}
	return "", fmt.Errorf("%s: no Go package known", fd.Path())
}
