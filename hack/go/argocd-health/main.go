// Command argocd-health runs Argo CD health scripts kept in Argo CD's own layout
// (<group>/<Kind>/health.lua, health_test.yaml, testdata/) the way Argo CD runs a health check
// that comes from argocd-cm: gopher-lua, a fresh state per object with SkipOpenLibs, then only
// the package, base and table libraries, the object as the global `obj`, a one-second limit, and
// the health read from the table the script returns. A script that leans on the string library
// (string.find, ("x"):upper()) works in a stock Lua but fails here, as it does in Argo CD.
//
// Argo CD also gives scripts a "safe" os module (os.time, os.date) and, in newer releases,
// require("json"); this runner offers neither, so a script using them fails here although Argo
// CD would run it. The operator's scripts use neither.
//
//	argocd-health DIR...
//
// For every case of DIR/health_test.yaml it prints one JSON object per line (dir, inputPath,
// expected, actual, error, pass). It exits 1 when a case fails (each named on stderr) and 2
// when a folder cannot be read.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"go.yaml.in/yaml/v3"
)

// Health is Argo CD's health status: what a script returns and what a case expects.
type Health struct {
	Status  string `json:"status" yaml:"status"`
	Message string `json:"message" yaml:"message"`
}

type testCase struct {
	HealthStatus Health `yaml:"healthStatus"`
	InputPath    string `yaml:"inputPath"`
}

type testFile struct {
	Tests []testCase `yaml:"tests"`
}

type result struct {
	Dir       string  `json:"dir"`
	InputPath string  `json:"inputPath"`
	Expected  Health  `json:"expected"`
	Actual    *Health `json:"actual"`
	Error     string  `json:"error,omitempty"`
	Pass      bool    `json:"pass"`
}

// The statuses Argo CD accepts; any other is reported as Unknown, as Argo CD does.
var validStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

const invalidStatusMessage = "Lua returned an invalid health status"

// readObject reads a YAML or JSON object into the shapes encoding/json produces (maps, slices,
// float64, string, bool, nil), as Argo CD's own tests load testdata.
func readObject(path string) (map[string]any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var parsed any
	if err := yaml.Unmarshal(raw, &parsed); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	asJSON, err := json.Marshal(parsed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var obj map[string]any
	if err := json.Unmarshal(asJSON, &obj); err != nil {
		return nil, fmt.Errorf("%s: not an object: %w", path, err)
	}
	return obj, nil
}

// toLua converts a decoded JSON value to a Lua value: arrays become sequences, objects tables.
func toLua(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := L.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]any:
		t := L.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetString(key, toLua(L, item))
		}
		return t
	}
	return lua.LNil
}

// stringField reads a string field of the returned table; absent is "", another type an error
// (Argo CD decodes the table through JSON into string fields, which refuses other types).
func stringField(t *lua.LTable, key string) (string, error) {
	switch v := t.RawGetString(key).(type) {
	case *lua.LNilType:
		return "", nil
	case lua.LString:
		return string(v), nil
	default:
		return "", fmt.Errorf("the returned %s is a %s, not a string", key, v.Type())
	}
}

// runHealth runs one health script on one object under Argo CD's rules.
func runHealth(script string, obj map[string]any) (*Health, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("opening the %q library: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return nil, err
	}
	returned, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("expected a table from the script, got %s", L.Get(-1).Type())
	}
	status, err := stringField(returned, "status")
	if err != nil {
		return nil, err
	}
	message, err := stringField(returned, "message")
	if err != nil {
		return nil, err
	}
	if !validStatuses[status] {
		return &Health{Status: "Unknown", Message: invalidStatusMessage}, nil
	}
	return &Health{Status: status, Message: message}, nil
}

// runDir runs every case of dir; it returns the results, or an error when the folder's script
// or case list cannot be read.
func runDir(dir string) ([]result, error) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return nil, err
	}
	var tests testFile
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "health_test.yaml"), err)
	}
	if len(tests.Tests) == 0 {
		return nil, errors.New(filepath.Join(dir, "health_test.yaml") + ": no tests")
	}
	results := make([]result, 0, len(tests.Tests))
	for _, tc := range tests.Tests {
		r := result{Dir: dir, InputPath: tc.InputPath, Expected: tc.HealthStatus}
		obj, err := readObject(filepath.Join(dir, tc.InputPath))
		if err == nil {
			r.Actual, err = runHealth(string(script), obj)
		}
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Pass = *r.Actual == tc.HealthStatus
		}
		results = append(results, r)
	}
	return results, nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health DIR... (each DIR holds health.lua and health_test.yaml)")
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	failed := false
	for _, dir := range os.Args[1:] {
		results, err := runDir(dir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "argocd-health: %v\n", err)
			os.Exit(2)
		}
		for _, r := range results {
			if err := out.Encode(r); err != nil {
				fmt.Fprintf(os.Stderr, "argocd-health: %v\n", err)
				os.Exit(2)
			}
			if !r.Pass {
				failed = true
				got := r.Error
				if r.Actual != nil {
					got = fmt.Sprintf("%s %q", r.Actual.Status, r.Actual.Message)
				}
				fmt.Fprintf(os.Stderr, "FAIL %s: want %s %q, got %s\n",
					filepath.Join(dir, r.InputPath), r.Expected.Status, r.Expected.Message, got)
			}
		}
	}
	if failed {
		os.Exit(1)
	}
}
