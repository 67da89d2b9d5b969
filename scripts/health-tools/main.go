// health-check: what GitOps tools conclude about objects, computed by their own libraries.
//
//	health-check kstatus < objects.json   # sigs.k8s.io/cli-utils kstatus status.Compute
//	health-check cel EXPRS.json < objects.json
//
// objects.json is a JSON array of objects (or a List); one line per object is printed:
// "<kind>/<name> <Status> <message>". For `cel`, EXPRS.json is the healthCheckExprs list of a
// Flux Kustomization ([{apiVersion, kind, inProgress, failed, current}]), evaluated the way
// Flux's CEL status reader does (RFC-0009): status.observedGeneration differing from
// metadata.generation is InProgress; otherwise inProgress, failed, current in that order, the
// first true one wins; none true is InProgress; an evaluation error is printed as Error.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type expr struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	InProgress string `json:"inProgress"`
	Failed     string `json:"failed"`
	Current    string `json:"current"`
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: health-check kstatus | cel EXPRS.json  (objects on stdin)")
	}
	objs, err := readObjects(os.Stdin)
	if err != nil {
		fail(err.Error())
	}
	switch os.Args[1] {
	case "kstatus":
		for _, o := range objs {
			r, err := status.Compute(o)
			if err != nil {
				fmt.Printf("%s Error %s\n", id(o), oneLine(err.Error()))
				continue
			}
			fmt.Printf("%s %s %s\n", id(o), r.Status, oneLine(r.Message))
		}
	case "cel":
		if len(os.Args) < 3 {
			fail("cel needs the expressions file")
		}
		raw, err := os.ReadFile(os.Args[2])
		if err != nil {
			fail(err.Error())
		}
		var exprs []expr
		if err := json.Unmarshal(raw, &exprs); err != nil {
			fail("expressions: " + err.Error())
		}
		for _, o := range objs {
			st, msg := evalCEL(exprs, o)
			fmt.Printf("%s %s %s\n", id(o), st, oneLine(msg))
		}
	default:
		fail("unknown mode " + os.Args[1])
	}
}

func evalCEL(exprs []expr, o *unstructured.Unstructured) (string, string) {
	var e *expr
	for i := range exprs {
		if exprs[i].APIVersion == o.GetAPIVersion() && exprs[i].Kind == o.GetKind() {
			e = &exprs[i]
		}
	}
	if e == nil {
		return "Error", "no healthCheckExprs entry for " + o.GetAPIVersion() + " " + o.GetKind()
	}
	content := o.UnstructuredContent()
	if og, found, _ := unstructured.NestedInt64(content, "status", "observedGeneration"); found && og != o.GetGeneration() {
		return "InProgress", fmt.Sprintf("observedGeneration %d, generation %d", og, o.GetGeneration())
	}
	env, err := cel.NewEnv(
		cel.Variable("apiVersion", cel.StringType),
		cel.Variable("kind", cel.StringType),
		cel.Variable("metadata", cel.DynType),
		cel.Variable("spec", cel.DynType),
		cel.Variable("status", cel.DynType),
	)
	if err != nil {
		return "Error", err.Error()
	}
	for _, c := range []struct{ expr, status string }{
		{e.InProgress, "InProgress"}, {e.Failed, "Failed"}, {e.Current, "Current"},
	} {
		if c.expr == "" {
			continue
		}
		ast, iss := env.Compile(c.expr)
		if iss.Err() != nil {
			return "Error", iss.Err().Error()
		}
		prg, err := env.Program(ast)
		if err != nil {
			return "Error", err.Error()
		}
		out, _, err := prg.Eval(content)
		if err != nil {
			return "Error", c.status + ": " + err.Error()
		}
		if out == types.True {
			return c.status, c.expr
		}
	}
	return "InProgress", "no expression is true"
}

func readObjects(r io.Reader) ([]*unstructured.Unstructured, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var list []map[string]interface{}
	if strings.HasPrefix(strings.TrimSpace(string(raw)), "{") {
		var l struct {
			Items []map[string]interface{} `json:"items"`
		}
		// Kubernetes' decoder: integers stay int64, as kstatus's accessors expect.
		if err := utiljson.Unmarshal(raw, &l); err != nil {
			return nil, err
		}
		list = l.Items
	} else if err := utiljson.Unmarshal(raw, &list); err != nil {
		return nil, err
	}
	out := make([]*unstructured.Unstructured, 0, len(list))
	for _, m := range list {
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

func id(o *unstructured.Unstructured) string {
	return o.GetKind() + "/" + o.GetName()
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "health-check: "+msg)
	os.Exit(2)
}
