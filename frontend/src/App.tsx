import { useEffect, useRef, type ReactNode } from "react";

import { PageHeader } from "./components/common";
import { BatchPage } from "./pages/Batch";
import { HomePage } from "./pages/Home";
import { JobsPage } from "./pages/Jobs";
import { ModelCardPage } from "./pages/ModelCard";
import { ResultPage } from "./pages/Result";
import { SettingsPage } from "./pages/Settings";
import { UploadPage } from "./pages/Upload";
import { Link, matchPath, useLocation } from "./lib/router";

function route(path: string): { page: ReactNode; section: string } {
  if (path === "/") return { page: <HomePage />, section: "/" };
  if (path === "/upload") return { page: <UploadPage />, section: "/upload" };
  if (path === "/jobs") return { page: <JobsPage />, section: "/jobs" };
  if (path === "/settings") return { page: <SettingsPage />, section: "/settings" };
  let params = matchPath("/jobs/:id", path);
  if (params) return { page: <ResultPage key={params.id} id={params.id!} />, section: "/jobs" };
  params = matchPath("/batches/:id", path);
  if (params) return { page: <BatchPage key={params.id} id={params.id!} />, section: "/jobs" };
  params = matchPath("/models/:id", path);
  if (params) return { page: <ModelCardPage key={params.id} id={params.id!} />, section: "/" };
  return {
    page: (
      <PageHeader title="Page not found">
        <p>
          There is no page at this address. <Link to="/">Go to the screening services</Link>.
        </p>
      </PageHeader>
    ),
    section: "",
  };
}

const NAV = [
  { to: "/", label: "Services" },
  { to: "/upload", label: "Screen" },
  { to: "/jobs", label: "Jobs" },
  { to: "/settings", label: "Settings" },
];

export function App() {
  const { path } = useLocation();
  const { page, section } = route(path);
  const main = useRef<HTMLElement>(null);
  const first = useRef(true);

  // After a navigation, start at the top and move focus to the new page (screen readers read it).
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    window.scrollTo(0, 0);
    main.current?.focus({ preventScroll: true });
  }, [path]);

  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="site-header">
        <div className="site-header-inner">
          <Link to="/" className="brand" aria-label="MedInform home">
            <svg aria-hidden="true" viewBox="0 0 32 32" width="28" height="28">
              <rect width="32" height="32" rx="6" fill="currentColor" />
              <path d="M13 7h6v6h6v6h-6v6h-6v-6H7v-6h6z" fill="var(--header-bg)" />
            </svg>
            <span>MedInform</span>
          </Link>
          <nav aria-label="Main">
            <ul className="nav">
              {NAV.map((item) => (
                <li key={item.to}>
                  <Link to={item.to} aria-current={section === item.to ? "page" : undefined}>
                    {item.label}
                  </Link>
                </li>
              ))}
            </ul>
          </nav>
        </div>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        {page}
      </main>
      <footer className="site-footer">
        <p>MedInform is a screening aid for trained health workers, not a diagnosis.</p>
      </footer>
    </>
  );
}
